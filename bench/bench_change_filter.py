"""The unchanged path's own cost: `Fingerprints.of` + `ChangeFilter.unchanged` per row.

    .venv/bin/python bench/bench_change_filter.py [--customers 1000000] [--chunks 100] [--rows 10000] [--rounds 3]

Builds a store of `--customers` customers in a temp dir the way a run does (SyncState.remember
+ flush), then times `of` + `unchanged` over `--chunks` chunks of `--rows` rows of a 4-column
file (identifier, two names, a city): every row unchanged, then 1% changed. The first
implementation (DataFrames, hash_pandas_object, a dict, a Python loop) runs inline here as the
baseline, on a plain reader connection, in the same process and on the same store. Target
(issue 8): well under 3 µs/row for `of` + `unchanged`, so the unchanged path can pass 100,000
rows/s end to end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch_updater.state.sync_state import LOOKUP_NAMES, ChangeFilter, Fingerprints, SyncState

NAMES = ["identifierValue", "firstName", "lastName", "extendedFields.city"]


def columns_of(first: int, rows: int, changed: bool = False) -> list[list[str]]:
    numbers = range(first, first + rows)
    city = [("Pune" if changed and i % 100 == 0 else "Mysuru") for i in numbers]
    return [[f"9198{i:08d}" for i in numbers], [f"First{i}" for i in numbers],
            [f"Last{i}" for i in numbers], city]


class Baseline:
    """The first implementation of `of` + `unchanged`, kept here to measure against."""

    def __init__(self, fingerprints: Fingerprints, reader):
        self.fingerprints, self.reader, self.sent = fingerprints, reader, set()

    def of(self, columns):
        f = self.fingerprints
        frame = pd.DataFrame(dict(zip(f._names, columns)), dtype=object)
        digests = pd.util.hash_pandas_object(frame, index=False, hash_key=f._digest_salt)
        return self.keys(frame), digests.to_numpy().view(np.int64)

    def keys(self, frame):
        f, parts = self.fingerprints, {}
        for name in LOOKUP_NAMES:
            column = frame[name] if name in frame else pd.Series("", index=frame.index, dtype=object)
            if name == "identifierValue":
                parts[name] = column.str.lower()
                continue
            column = column.where(column != "", f._defaults.get(name, ""))
            parts[name] = column.str.upper() if name == "source" else column.str.lower()
        hashed = pd.util.hash_pandas_object(pd.DataFrame(parts, dtype=object), index=False, hash_key=f._key_salt)
        return hashed.to_numpy().view(np.int64)

    def unchanged(self, keys, digests):
        result = np.zeros(len(keys), dtype=bool)
        found = self.reader.execute("SELECT key, digest FROM synced WHERE key IN"
                                    " (SELECT value FROM json_each(?))", (orjson.dumps(keys.tolist()),))
        stored, sent = dict(found.fetchall()), self.sent
        for i, (key, digest) in enumerate(zip(keys.tolist(), digests.tolist())):
            if key not in sent and stored.get(key) == digest:
                result[i] = True
            else:
                sent.add(key)
        return result


def same_fingerprints(columns) -> None:
    fingerprints = Fingerprints(NAMES, CONFIG)
    new, old = fingerprints.of(columns), Baseline(fingerprints, None).of(columns)
    assert all((a == b).all() for a, b in zip(new, old)), "keys or digests differ from the first implementation"


def build_store(path: Path, customers: int) -> None:
    """The store a first run of `customers` rows leaves behind (remember after each 200, flush)."""
    fingerprints = Fingerprints(NAMES, CONFIG)
    with SyncState(path) as state:
        for first in range(0, customers, 100_000):
            keys, digests = fingerprints.of(columns_of(first, min(100_000, customers - first)))
            for key, digest in zip(keys.tolist(), digests.tolist()):
                state.remember(key, digest)
            state.flush()


def timed(of, unchanged, chunks) -> tuple[float, int]:
    """Seconds for `of` + `unchanged` over the chunks, and how many rows came out unchanged.
    Chunks are made as they are needed (outside the timing), so the RSS is the filter's."""
    seconds = skipped = 0
    for columns in chunks:
        began = time.perf_counter()
        skipped += int(unchanged(*of(columns)).sum())
        seconds += time.perf_counter() - began
    return seconds, skipped


def one_pass(name: str, path: Path, chunks) -> tuple[float, int, float]:
    """(seconds, unchanged rows, RSS in MB with the store open) of one implementation."""
    fingerprints = Fingerprints(NAMES, CONFIG)
    if name == "baseline":
        with closing(sqlite3.connect(path)) as reader:  # as the first SyncState opened its reader
            baseline = Baseline(fingerprints, reader)
            seconds, skipped = timed(baseline.of, baseline.unchanged, chunks)
            return seconds, skipped, rss_mb()[0]
    with SyncState(path) as state:
        changes = ChangeFilter(state, only_changed=True)
        seconds, skipped = timed(fingerprints.of, changes.unchanged, chunks)
        return seconds, skipped, rss_mb()[0]


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size in MB; mapped pages of the store count too."""
    with open("/proc/self/statm") as statm:
        current = int(statm.read().split()[1]) * resource.getpagesize()
    return current / 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CONFIG = SimpleNamespace(api=SimpleNamespace(base_url="https://eu.api.example.com", source="INSTORE",
                                             account_id=None, identifier_name="mobile", use_async=False),
                         input="InputSettings()")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of baseline and new, alternating")
    args = parser.parse_args()
    span = max(args.customers - args.rows, 1)
    starts = [(i * 7919 * args.rows) % span for i in range(args.chunks)]  # spread over the store
    rows = len(starts) * args.rows
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.sqlite3"
        began = time.perf_counter()
        builder = multiprocessing.Process(target=build_store, args=(path, args.customers))
        builder.start()  # its own process, so that its peak RSS is not ours
        builder.join()
        print(f"store: {args.customers:,} customers, built in {time.perf_counter() - began:.1f} s,"
              f" {path.stat().st_size / 2**20:.0f} MB; chunks of {args.rows:,} rows, {rows:,} rows a pass;"
              f" RSS before the passes {rss_mb()[0]:.0f} MB")
        same_fingerprints(columns_of(starts[0], args.rows))
        for label, changed in (("all unchanged", False), ("1% changed", True)):
            best, counts = {}, set()
            for round_ in range(args.rounds):
                for name in ("baseline", "new"):
                    chunks = (columns_of(start, args.rows, changed) for start in starts)
                    seconds, skipped, open_rss = one_pass(name, path, chunks)
                    best[name] = min(best.get(name, seconds), seconds)
                    counts.add(skipped)
                    print(f"{label:14} round {round_ + 1} {name:9} {seconds / rows * 1e6:5.2f} µs/row"
                          f" ({rows / seconds:9,.0f} rows/s, {skipped:,} unchanged);"
                          f" RSS {open_rss:4.0f} MB with the store open, peak {rss_mb()[1]:4.0f} MB")
            assert len(counts) == 1, f"baseline and new disagree on how many rows are unchanged: {counts}"
            print(f"{label:14} best of {args.rounds}: baseline {best['baseline'] / rows * 1e6:.2f} µs/row,"
                  f" new {best['new'] / rows * 1e6:.2f} µs/row ({best['baseline'] / best['new']:.1f}x)")


if __name__ == "__main__":
    main()
