"""The state store's writes per sent row: `ChangeFilter.sending` + `settled` + `SyncState.flush`.

    .venv/bin/python bench/bench_state_writes.py [--customers 1000000] [--rows 100000] [--rounds 3]

A run of `--rows` rows as runner.py drives the store: `sending()` per chunk of `--chunk`
keys, one chunk ahead (the preparing thread hands over the next chunk while this one is
sent), `settled()` per row (`--failed` of them not a 200) and a flush every `--flush-every`
settled rows, against a store pre-filled with `--customers` customers in a temp dir
(`--known` of the run's customers are among them). Each implementation starts from its own
copy of the same store file, and both must leave the same customers and digests; rounds
alternate the order. The figure is process CPU per row (system time included: SQLite's
writes are syscalls), split by caller: `sending` (the preparing thread), `settled` (the
event loop, once per row) and `flush` (the group commits, and close). The first
implementation runs inline here as the baseline.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch_updater.state.sync_state import ChangeFilter, SyncState


class BaselineState:
    """The first write path (its connection set-up included): a dict and a set under a
    lock, executemany per flush."""

    def __init__(self, path):
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()
        self._remember: dict[int, int] = {}
        self._forget: set[int] = set()

    def remember(self, key, digest):
        with self._lock:
            self._forget.discard(key)
            self._remember[key] = digest

    def forget_later(self, keys):
        with self._lock:
            for key in keys:
                self._remember.pop(key, None)
            self._forget.update(keys)

    def forget(self, key):
        self.forget_later((key,))

    def flush(self):
        with self._lock:
            if not self._remember and not self._forget:
                return
            remember, self._remember = self._remember, {}
            forget, self._forget = self._forget, set()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO synced (key, digest, updated) VALUES (?, ?, ?)",
                                 [(key, digest, now) for key, digest in remember.items()])
            self._db.executemany("DELETE FROM synced WHERE key = ?", [(key,) for key in forget])

    def close(self):
        self.flush()
        self._db.close()


class BaselineFilter:
    """The first `sending` / `settled`: a dict of sent rows, a call into the store per row."""

    def __init__(self, state, *, only_changed):
        self.state = state
        self._pending = {}

    def sending(self, rows, keys, digests):
        keys_list = keys.tolist()
        self._pending.update(zip(rows, zip(keys_list, digests.tolist())))
        self.state.forget_later(keys_list)

    def answered(self, row, applied):
        key_digest = self._pending.pop(row, None)
        if key_digest is None:
            return
        key, digest = key_digest
        if applied:
            self.state.remember(key, digest)
        else:
            self.state.forget(key)


IMPLEMENTATIONS = {"baseline": (BaselineState, BaselineFilter), "changes.py": (SyncState, ChangeFilter)}  # old, new


def build_store(path: Path, customers: int, rng: np.random.Generator) -> np.ndarray:
    """A store as runs leave it: `customers` random keys with digests; returns the keys."""
    keys = np.unique(rng.integers(-2**63, 2**63 - 1, size=customers, dtype=np.int64))
    digests = rng.integers(-2**63, 2**63 - 1, size=len(keys), dtype=np.int64)
    with SyncState(path) as state:
        now = "2026-11-01T02:00:00+00:00"
        with state._db:
            state._db.execute("BEGIN")
            state._db.executemany("INSERT INTO synced (key, digest, updated) VALUES (?, ?, ?)",
                                  ((k, d, now) for k, d in zip(keys.tolist(), digests.tolist())))
        state._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return keys


def run_keys(stored: np.ndarray, rows: int, known: float, rng: np.random.Generator) -> np.ndarray:
    """The run's customers, one row each: `known` of them in the store, in file order."""
    old = rng.choice(stored, size=int(rows * known), replace=False)
    new = rng.integers(-2**63, 2**63 - 1, size=rows - len(old), dtype=np.int64)
    keys = np.concatenate([old, new])
    rng.shuffle(keys)
    return keys


def simulate(name: str, path: Path, keys: np.ndarray, args, rng: np.random.Generator) -> dict:
    """One run against the store at `path`; process CPU per row, split by thread of origin."""
    state_class, filter_class = IMPLEMENTATIONS[name]
    digests = rng.integers(-2**63, 2**63 - 1, size=len(keys), dtype=np.int64)
    applied = (rng.random(len(keys)) >= args.failed).tolist()
    chunks = [(list(range(first + 2, min(first + args.chunk, len(keys)) + 2)),
               keys[first:first + args.chunk], digests[first:first + args.chunk])
              for first in range(0, len(keys), args.chunk)]
    state = state_class(path)
    changes = filter_class(state, only_changed=False)
    spent = {"sending": 0.0, "settled": 0.0, "flush": 0.0}

    def timed(part, call, *arguments):
        began = time.process_time()
        call(*arguments)
        spent[part] += time.process_time() - began

    timed("sending", changes.sending, *chunks[0])
    for i, (rows, _, _) in enumerate(chunks):
        if i + 1 < len(chunks):
            timed("sending", changes.sending, *chunks[i + 1])
        for first in range(0, len(rows), args.flush_every):
            timed("settled", settle, changes, rows[first:first + args.flush_every], applied)
            timed("flush", state.flush)
    timed("flush", state.close)
    spent["total"] = sum(spent.values())
    return {part: seconds / len(keys) * 1e6 for part, seconds in spent.items()}


def settle(changes, rows: list[int], applied: list[bool]) -> None:
    for row in rows:
        changes.answered(row, applied[row - 2])


def check_same_store(paths: list[Path]) -> None:
    """Both implementations must leave the very same rows (the timestamps aside)."""
    contents = []
    for path in paths:
        with sqlite3.connect(path) as db:
            contents.append(db.execute("SELECT count(*), total(key % 1000003), total(digest % 1000003)"
                                       " FROM synced").fetchone())
    assert len(set(contents)) == 1, contents


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--flush-every", type=int, default=2_000)
    parser.add_argument("--known", type=float, default=0.9)
    parser.add_argument("--failed", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    names = list(IMPLEMENTATIONS)
    figures: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(8)
        began = time.perf_counter()
        stored = build_store(folder / "store.sqlite3", args.customers, rng)
        print(f"store of {len(stored):,} customers built in {time.perf_counter() - began:.1f} s")
        for round_number in range(args.rounds):
            keys = run_keys(stored, args.rows, args.known, rng)
            seed = int(rng.integers(1 << 31))
            order = names if round_number % 2 == 0 else names[::-1]
            paths = []
            for name in order:
                path = folder / f"{name}-{round_number}.sqlite3"
                shutil.copy(folder / "store.sqlite3", path)
                figures[name].append(simulate(name, path, keys, args, np.random.default_rng(seed)))
                paths.append(path)
            check_same_store(paths)
            for path in paths:
                path.unlink()
    print(f"{args.rows:,} rows, chunks of {args.chunk:,}, flush every {args.flush_every:,} settled rows, "
          f"{args.known:.0%} of the run's customers known, {args.failed:.0%} failed; "
          f"median of {args.rounds} rounds, process CPU per row:")
    parts = ("sending", "settled", "flush", "total")
    medians = {name: [statistics.median(f[part] for f in figures[name]) for part in parts] for name in names}
    print(f"  {'':12}" + "".join(f"{part:>10}" for part in parts))
    for name in names:
        print(f"  {name:12}" + "".join(f"{value:7.2f} us" for value in medians[name]))
    print(f"  {'old / new':12}" + "".join(f"{old / new:9.2f}x" for old, new in zip(*medians.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
