"""Send only what changed: what the API last acknowledged per customer, and the test.

The state store (SQLite) maps a customer — (base_url, source, accountId, identifierName,
identifierValue) — to a digest of the last payload the API answered 200 for. Both are
64-bit hashes computed for a whole chunk at once (pandas' vectorised hashing), and a
chunk's customers are looked up in one query, so an unchanged row costs microseconds.

Rules: the state changes only after a 200; a row that failed or is in doubt makes its
customer forgotten (so it is sent next time, whatever the file says); and once a row of
a customer is sent in a run, that customer's later rows are sent too (they come after it).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS synced (key INTEGER PRIMARY KEY, digest INTEGER NOT NULL, updated TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
LOOKUP_NAMES = ("source", "accountId", "identifierName", "identifierValue")
UNCHANGED = "unchanged: the API acknowledged the same values before"


def _salt(*parts: object) -> str:
    """pandas' hash key: 16 characters derived from what must change the hash."""
    return hashlib.sha256(orjson.dumps(parts, default=str)).hexdigest()[:16]


class Fingerprints:
    """Per row of a chunk: the customer's state key and the payload's digest, vectorised.

    The digest covers the canonical column names and every setting that shapes the
    payload, so the same cells under another header or config are a change.
    """

    def __init__(self, names: Sequence[str], config):
        api = config.api
        self._names = list(names)
        self._defaults = {"source": api.source, "accountId": api.account_id or "",
                          "identifierName": api.identifier_name}
        self._key_salt = _salt("key", api.base_url.rstrip("/"))
        self._digest_salt = _salt("digest", self._names, api.use_async, repr(config.input))

    def of(self, columns: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """`columns`: the canonical columns' trimmed cells (in `names` order) of the rows."""
        import pandas as pd

        frame = pd.DataFrame(dict(zip(self._names, columns)), dtype=object)
        digests = pd.util.hash_pandas_object(frame, index=False, hash_key=self._digest_salt)
        return self.keys(frame), digests.to_numpy().view(np.int64)

    def keys(self, frame) -> np.ndarray:
        import pandas as pd

        parts = {}
        for name in LOOKUP_NAMES:
            column = frame[name] if name in frame else pd.Series("", index=frame.index, dtype=object)
            if name == "identifierValue":
                parts[name] = column.str.lower()
                continue
            column = column.where(column != "", self._defaults.get(name, ""))
            # enumerations match in any case: normalise as the API spells them
            parts[name] = column.str.upper() if name == "source" else column.str.lower()
        lookup = pd.DataFrame(parts, dtype=object)
        hashed = pd.util.hash_pandas_object(lookup, index=False, hash_key=self._key_salt)
        return hashed.to_numpy().view(np.int64)

    def key_of(self, identifier_name: str, identifier_value: str, source: str | None = None,
               account_id: str | None = None) -> int:
        """One customer's key, for `batch-updater state forget`."""
        import pandas as pd

        frame = pd.DataFrame({"source": [source or ""], "accountId": [account_id or ""],
                              "identifierName": [identifier_name], "identifierValue": [identifier_value]},
                             dtype=object)
        return int(self.keys(frame)[0])


class SyncState:
    """The store: lookups by chunk, writes buffered and committed with the journal's cadence.

    Lookups come from the thread that prepares chunks, through a connection of their own
    (WAL lets it read while the event loop's connection writes); the write buffers are
    shared, hence the lock.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(mode=0o600)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._reader = sqlite3.connect(self.path, check_same_thread=False)
        self._lock = threading.Lock()
        self._remember: dict[int, int] = {}
        self._forget: set[int] = set()

    def __enter__(self) -> "SyncState":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def digests(self, keys: np.ndarray) -> dict[int, int]:
        """The stored digest of each known key among `keys`, in one query."""
        if not len(keys):
            return {}
        found = self._reader.execute("SELECT key, digest FROM synced WHERE key IN"
                                     " (SELECT value FROM json_each(?))", (orjson.dumps(keys.tolist()),))
        return dict(found.fetchall())

    def remember(self, key: int, digest: int) -> None:
        with self._lock:
            self._forget.discard(key)
            self._remember[key] = digest

    def forget_later(self, keys: Sequence[int]) -> None:
        with self._lock:
            for key in keys:
                self._remember.pop(key, None)
            self._forget.update(keys)

    def forget(self, key: int) -> None:
        self.forget_later((key,))

    def flush(self) -> None:
        with self._lock:
            if not self._remember and not self._forget:
                return
            remember, self._remember = self._remember, {}
            forget, self._forget = self._forget, set()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO synced (key, digest, updated) VALUES (?, ?, ?)",
                                 [(key, digest, now) for key, digest in remember.items()])
            self._db.executemany("DELETE FROM synced WHERE key = ?", [(key,) for key in forget])

    def forget_all(self) -> int:
        with self._db:
            self._db.execute("BEGIN")
            return self._db.execute("DELETE FROM synced").rowcount

    def forget_keys(self, keys: Sequence[int]) -> int:
        with self._db:
            self._db.execute("BEGIN")
            return sum(self._db.execute("DELETE FROM synced WHERE key = ?", (key,)).rowcount for key in keys)

    def stats(self) -> dict[str, object]:
        count, oldest, newest = self._db.execute(
            "SELECT COUNT(*), MIN(updated), MAX(updated) FROM synced").fetchone()
        return {"path": str(self.path), "customers": count, "oldest": oldest, "newest": newest}

    def close(self) -> None:
        self.flush()
        self._reader.close()
        self._db.close()


class ChangeFilter:
    """Per run: decides which payloads are unchanged, and keeps the store up to date."""

    def __init__(self, state: SyncState, *, only_changed: bool):
        self.state = state
        self.only_changed = only_changed
        self._sent_customers: set[int] = set()
        self._pending: dict[int, tuple[int, int]] = {}  # row -> (key, digest) of sent rows

    def unchanged(self, keys: np.ndarray, digests: np.ndarray) -> np.ndarray:
        """Per row (in file order): acknowledged before with this very digest, and no earlier
        row of its customer is being sent in this run. Called from the preparing thread."""
        result = np.zeros(len(keys), dtype=bool)
        if not self.only_changed or not len(keys):
            return result
        stored, sent = self.state.digests(keys), self._sent_customers
        for i, (key, digest) in enumerate(zip(keys.tolist(), digests.tolist())):
            if key not in sent and stored.get(key) == digest:
                result[i] = True
            else:
                sent.add(key)  # this customer's later rows follow it
        return result

    def sending(self, rows: Sequence[int], keys: np.ndarray, digests: np.ndarray) -> None:
        """These rows go out: until a 200 says otherwise, their customers are forgotten, so a
        row in doubt is never "unchanged" next time."""
        keys_list = keys.tolist()
        self._pending.update(zip(rows, zip(keys_list, digests.tolist())))
        self.state.forget_later(keys_list)

    def settled(self, row: int, applied: bool) -> None:
        """The API answered for a sent row: remember its digest after a 200, else forget."""
        key_digest = self._pending.pop(row, None)
        if key_digest is None:
            return
        key, digest = key_digest
        if applied:
            self.state.remember(key, digest)
        else:
            self.state.forget(key)
