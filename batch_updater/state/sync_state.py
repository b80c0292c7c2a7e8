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
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path

import numpy as np
import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS synced (key INTEGER PRIMARY KEY, digest INTEGER NOT NULL, updated TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
# Two JSON texts rather than a Python row per key (several times cheaper): every
# key's digest (0 if unknown) in the order given, and where the unknown keys are. json_each
# stays the outer loop (LEFT JOIN): one rowid seek per key.
_LOOKUP = ("SELECT json_group_array(ifnull(synced.digest, 0)),"
           " json_group_array(wanted.key) FILTER (WHERE synced.key IS NULL)"
           " FROM json_each(?) AS wanted LEFT JOIN synced ON synced.key = wanted.value")
# Writes take their keys as one JSON text, a statement each way rather than a Python row
# per key (and one sqlite3_step, so SQLite runs the whole write without the GIL).
_FORGET = "DELETE FROM synced WHERE key IN (SELECT value FROM json_each(?1))"
_REMEMBER = ("INSERT OR REPLACE INTO synced (key, digest, updated)"
             " SELECT CAST(change.key AS INTEGER), change.value, ?2 FROM json_each(?1) AS change"
             " WHERE change.value IS NOT NULL ORDER BY 1")  # B-tree pages in order
# A remember waits until this many keys or seconds are pending: written together, they share
# B-tree pages (2,000 at a time touch ~one page each), several times cheaper per row. Only
# remembers wait: their customer stays forgotten meanwhile, which is the safe side. Not more:
# larger batches write a little faster but hold more memory while they wait (the trade-off
# is measured by bench/bench_state_writes.py and bench/bench_memory.py).
REMEMBER_KEYS = 10_000
REMEMBER_SECONDS = 1.0
_READER_MMAP_BYTES = 256 << 20  # capped: mapped pages count in RSS
LOOKUP_NAMES = ("source", "accountId", "identifierName", "identifierValue")
UNCHANGED = "unchanged: the API acknowledged the same values before"


def _salt(*parts: object) -> str:
    """pandas' hash key: 16 characters derived from what must change the hash."""
    return hashlib.sha256(orjson.dumps(parts, default=str)).hexdigest()[:16]


class Fingerprints:
    """Per row of a chunk: the customer's state key and the payload's digest, vectorised.

    The digest covers the canonical column names and every setting that shapes the
    payload, so the same cells under another header or config are a change.

    Both are what `pd.util.hash_pandas_object(DataFrame(cells), index=False)` gives (the
    first implementation; existing stores hold its values), computed column by column
    without building frames: a lookup column the file lacks is one constant hash, and a
    present one is normalised once per distinct value.
    """

    def __init__(self, names: Sequence[str], config):
        api = config.api
        self._names = list(names)
        self._defaults = {"source": api.source, "accountId": api.account_id or "",
                          "identifierName": api.identifier_name}
        self._key_salt = _salt("key", api.base_url.rstrip("/"))
        self._digest_salt = _salt("digest", self._names, api.use_async, config.input.shaping_text())
        self._default_hashes: dict[str, np.ndarray] = {}

    def of(self, columns: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """`columns`: the canonical columns' trimmed cells (str, in `names` order) of the rows."""
        cells = dict(zip(self._names, columns))  # as the frame had it: a repeated name keeps its last column
        rows = len(next(iter(cells.values()))) if cells else 0
        digests = _combined([_hashed(column, self._digest_salt) for column in cells.values()], rows)
        return self._keys(cells, rows), digests

    def _keys(self, cells: Mapping[str, Sequence[str]], rows: int) -> np.ndarray:
        hashes = []
        for name in LOOKUP_NAMES:
            if name not in cells:
                hashes.append(self._default_hash(name))
            elif name == "identifierValue":
                hashes.append(_hashed(list(map(str.lower, cells[name])), self._key_salt))
            else:
                hashes.append(self._enumeration_hashes(name, cells[name]))
        return _combined(hashes, rows)

    def _default_hash(self, name: str) -> np.ndarray:
        """The key hash of a blank cell: one value, broadcast over the rows."""
        if name not in self._default_hashes:
            self._default_hashes[name] = _hashed([self._normalised(name, "")], self._key_salt)
        return self._default_hashes[name]

    def _enumeration_hashes(self, name: str, column: Sequence[str]) -> np.ndarray:
        """A file's source/accountId/identifierName column holds few distinct values."""
        import pandas as pd

        codes, distinct = pd.factorize(_objects(column))
        normalised = [self._normalised(name, value) for value in distinct.tolist()]
        return _hashed(normalised, self._key_salt)[codes]

    def _normalised(self, name: str, value: str) -> str:
        """A lookup cell as the key sees it: blank means the configured default (not for the
        identifier), and enumerations match in any case: spelled as the API spells them."""
        if name == "identifierValue":
            return value.lower()
        value = value or self._defaults.get(name, "")
        return value.upper() if name == "source" else value.lower()

    def key_of(self, identifier_name: str, identifier_value: str, source: str | None = None,
               account_id: str | None = None) -> int:
        """One customer's key, for `batch-updater state forget`."""
        cells = {"source": [source or ""], "accountId": [account_id or ""],
                 "identifierName": [identifier_name], "identifierValue": [identifier_value]}
        return int(self._keys(cells, 1)[0])


def _objects(column: Sequence[str]) -> np.ndarray:
    if isinstance(column, np.ndarray) and column.dtype == object:
        return column
    return np.fromiter(column, dtype=object, count=len(column))


def _hashed(column: Sequence[str], salt: str) -> np.ndarray:
    """pandas' hash of each cell (SipHash of its UTF-8, then mixed), as uint64."""
    from pandas.util import hash_array

    values = _objects(column)
    sample = values[:64].tolist()
    # pandas' categorize path gives the same values; it only pays when a column repeats itself
    repeats = len(set(sample)) * 8 <= len(sample)
    return hash_array(values, hash_key=salt, categorize=repeats)


def _combined(hashes: list[np.ndarray], rows: int) -> np.ndarray:
    """Row hashes from column hashes, combined as hash_pandas_object combines a frame's
    columns (after CPython's old tuple hash), as int64; a one-element array stands for a
    column of one value."""
    combined = np.full(rows, 0x345678, dtype=np.uint64)
    multiplier = 1000003
    for i, column in enumerate(hashes):
        combined ^= column
        combined *= np.uint64(multiplier)
        multiplier += 82520 + 2 * (len(hashes) - i)
    combined += np.uint64(97531)
    return combined.view(np.int64)


class SyncState:
    """The store: lookups by chunk, writes recorded per row and committed in groups.

    Lookups come from the thread that prepares chunks, through a connection of their own
    (WAL lets it read while the writer connection writes). Writes are calls recorded in
    order, (key, digest) to remember or (key, None) to forget, from any thread (a list
    append is atomic), and `flush()` (one thread at a time) commits them:

    - a forget is committed by the next flush, and survives a crash from then on;
    - a remember recorded with `record` (ChangeFilter.answered, a call per row) is committed
      by the first flush after REMEMBER_KEYS keys or REMEMBER_SECONDS seconds wait (after a
      `remember()`, by the next flush; by `flush_all()` and close): its customer was
      forgotten when its row went out and stays so meanwhile, so a crash costs a request
      next time, never a row wrongly "unchanged";
    - per key the last call wins, in call order, within a flush and across flushes.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(mode=0o600)
        # commits come from the runner's writer thread
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._reader = sqlite3.connect(self.path, check_same_thread=False)
        # Lookups read pages all over the file: mapped, they cost no read() call and no copy.
        self._reader.execute(f"PRAGMA mmap_size={_READER_MMAP_BYTES}")
        self._init_writes()

    def _init_writes(self) -> None:
        """The recorded calls and the waiting remembers (PostgreSQL's store shares them)."""
        self._calls: list[tuple[int, int | None]] = []
        self.record = self._calls.append  # (key, digest) or (key, None): remember or forget
        self._flushing = threading.Lock()
        self._waiting: dict[int, int | None] = {}  # remembers not written yet (None: forgotten since)
        self._waiting_since = 0.0
        self._hurry = False  # the next flush writes every waiting remember

    def __enter__(self) -> SyncState:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def stored(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per key (int64): whether the store knows it, and its digest there (0 if not), in
        one query. Pass the keys sorted: the B-tree is then walked in order."""
        if not len(keys):
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
        wanted = orjson.dumps(np.ascontiguousarray(keys, dtype=np.int64), option=orjson.OPT_SERIALIZE_NUMPY)
        digests, unknown = self._reader.execute(_LOOKUP, (wanted,)).fetchone()
        known = np.ones(len(keys), dtype=bool)
        known[orjson.loads(unknown)] = False
        return known, np.array(orjson.loads(digests), dtype=np.int64)

    def remember(self, key: int, digest: int) -> None:
        """Committed by the next flush, with whatever waits (`record` may wait: the runner's way)."""
        self.record((key, digest))
        self._hurry = True

    def forget(self, key: int) -> None:
        self.record((key, None))

    def forget_later(self, keys: Sequence[int]) -> None:
        self._calls.extend(list(zip(keys, repeat(None))))  # a list: appended in one atomic step

    def flush(self) -> None:
        """Commit the forgets recorded so far, and the waiting remembers when they are due."""
        with self._flushing:
            hurry, self._hurry = self._hurry, False  # before taking the calls: none is left behind
            calls = self._taken()
            forgotten = [key for key, digest in calls if digest is None]
            if calls and not self._waiting:
                self._waiting_since = time.monotonic()
            self._waiting.update(calls)  # the last call per key wins
            due = bool(self._waiting) and (hurry or len(self._waiting) >= REMEMBER_KEYS
                                           or time.monotonic() - self._waiting_since >= REMEMBER_SECONDS)
            if forgotten or due:
                self._commit(forgotten, self._waiting if due else {})
            if due:
                self._waiting = {}

    def flush_all(self) -> None:
        """Commit everything recorded so far (through flush(), which benchmarks switch off)."""
        self._hurry = True
        self.flush()

    def _taken(self) -> list[tuple[int, int | None]]:
        """The calls recorded so far, in order; calls recorded meanwhile stay for next time."""
        count = len(self._calls)
        taken = self._calls[:count]
        del self._calls[:count]
        return taken

    def _commit(self, forgotten: list[int], remembered: dict[int, int | None]) -> None:
        """One transaction: forgets first (a waiting remember of the same key came later),
        then the remembers (None: forgotten since, skipped)."""
        with self._db:
            self._db.execute("BEGIN")
            if forgotten:
                self._db.execute(_FORGET, (orjson.dumps(forgotten),))
            if remembered:
                now = datetime.now(UTC).isoformat(timespec="seconds")
                self._db.execute(_REMEMBER, (orjson.dumps(remembered, option=orjson.OPT_NON_STR_KEYS), now))

    def forget_all(self) -> int:
        self.flush_all()  # what was recorded before came first
        with self._db:
            self._db.execute("BEGIN")
            return self._db.execute("DELETE FROM synced").rowcount

    def forget_keys(self, keys: Sequence[int]) -> int:
        self.flush_all()
        with self._db:
            self._db.execute("BEGIN")
            return sum(self._db.execute("DELETE FROM synced WHERE key = ?", (key,)).rowcount for key in keys)

    def stats(self) -> dict[str, object]:
        count, oldest, newest = self._db.execute(
            "SELECT COUNT(*), MIN(updated), MAX(updated) FROM synced").fetchone()
        return {"path": str(self.path), "customers": count, "oldest": oldest, "newest": newest}

    def close(self) -> None:
        self.flush_all()
        self._reader.close()
        self._db.close()


class ChangeFilter:
    """Per run: decides which payloads are unchanged, and keeps the store up to date."""

    def __init__(self, state: SyncState, *, only_changed: bool):
        self.state = state
        self.only_changed = only_changed
        self._sent_customers: set[int] = set()
        self._pending: dict[int, tuple[int, int]] = {}  # row -> (key, digest) of sent rows
        self._handed: list[dict[int, int]] = []          # per chunk sent: key -> its last row (preparing thread)
        self._last_row: dict[int, int] = {}              # the same, gathered (event loop only)
        self._record = state.record

    def unchanged(self, keys: np.ndarray, digests: np.ndarray) -> np.ndarray:
        """Per row (in file order): acknowledged before with this very digest, and no earlier
        row of its customer is being sent in this run. Called from the preparing thread."""
        result = np.zeros(len(keys), dtype=bool)
        if not self.only_changed or not len(keys):
            return result
        order = np.argsort(keys, kind="stable")  # a customer's rows side by side, in file order
        keys, digests = keys[order], digests[order]
        same = ~self._sent_before(keys)
        known, stored = self.state.stored(keys[same])
        same[same] = known & (stored == digests[same])
        unchanged = same & ~_after_a_sent_row(keys, ~same)
        self._sent_customers.update(keys[~unchanged].tolist())  # their later rows follow them
        result[order] = unchanged
        return result

    def _sent_before(self, keys: np.ndarray) -> np.ndarray:
        """Per key: a row of this customer was sent earlier in the run."""
        again = self._sent_customers.intersection(keys.tolist()) if self._sent_customers else ()
        if not again:  # the usual chunk: customers not seen before in this run
            return np.zeros(len(keys), dtype=bool)
        return np.isin(keys, np.fromiter(again, dtype=np.int64, count=len(again)))

    def sending(self, rows: Sequence[int], keys: np.ndarray, digests: np.ndarray) -> None:
        """These rows go out: until a 200 says otherwise, their customers are forgotten, so a
        row in doubt is never "unchanged" next time. Called from the preparing thread."""
        keys_list = keys.tolist()
        self._pending.update(zip(rows, zip(keys_list, digests.tolist())))
        self._handed.append(dict(zip(keys_list, rows)))  # before the forgets: see answered()
        self.state.forget_later(keys_list)

    def answered(self, row: int, applied: bool) -> None:
        """The API answered for a sent row: remember its digest after a 200, else forget;
        but while a later row of its customer is on its way, the customer stays forgotten
        (that row's answer decides). Called once per row on the event loop, without a lock:
        the remember is recorded before the check, so a later row handed over meanwhile
        either is seen by the check or has its forget recorded after the remember."""
        sent = self._pending.pop(row, None)
        if sent is None:
            return
        key = sent[0]
        self._record(sent if applied else (key, None))  # the (key, digest) pair as sending() made it
        while self._handed:
            self._last_row.update(self._handed.pop(0))
        if self._last_row.get(key, row) == row:
            self._last_row.pop(key, None)
        elif applied:
            self._record((key, None))


def _after_a_sent_row(keys: np.ndarray, sent: np.ndarray) -> np.ndarray:
    """Per row of `keys` (sorted, a customer's rows in file order): an earlier row of the
    same customer is in `sent`."""
    first_of_customer = np.empty(len(keys), dtype=bool)
    first_of_customer[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first_of_customer[1:])
    if first_of_customer.all():
        return np.zeros(len(keys), dtype=bool)  # one row per customer: the usual chunk
    sent_before = np.cumsum(sent) - sent
    # sent_before is non-decreasing, so the running maximum of its value at each customer's
    # first row is that value for the customer's every row
    customer_start = np.maximum.accumulate(np.where(first_of_customer, sent_before, 0))
    return sent_before > customer_start
