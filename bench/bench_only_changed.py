"""--only-changed on a big nightly export: 1% changed rows, against the sandbox, no rate limit.

    .venv/bin/python bench/bench_only_changed.py [--rows 1000000] [--changed 0.01]

1. a first full run fills the state store (not timed against a target);
2. the same file again with --only-changed: every row unchanged (the unchanged path's rows/s);
3. 1% of the rows changed, --only-changed: total time, against the baseline of
4. a file of just the changed rows, sent in full (the time the 1% needs on its own);
5. reading the file alone, chunk by chunk as a run reads it: the floor under step 2.
Targets (issue 8): step 3 ≤ step 4 + 60 s; step 2 ≥ 100,000 rows/s.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sandbox_process import sandbox_process

from batch_updater.config import load_config
from batch_updater.input.reader import open_input
from batch_updater.runner import run

HEADER = ["identifierValue", "firstName", "lastName", "extendedFields.city"]


def write(path: Path, rows: int, changed: set[int], only: bool = False) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            if only and i not in changed:
                continue
            writer.writerow([f"9198{i:08d}", f"First{i}", f"Last{i}", "Pune" if i in changed else "Mysuru"])
    return path


def timed(config, path: Path, **options) -> tuple[float, object]:
    began = time.perf_counter()
    summary = run(config, path, **options)
    return time.perf_counter() - began, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01)
    args = parser.parse_args()
    changed = set(range(0, args.rows, round(1 / args.changed)))
    with tempfile.TemporaryDirectory() as tmp, \
            sandbox_process("--customers", str(args.rows), "--no-record") as url:
        folder = Path(tmp)

        def config(only_changed: bool):
            return load_config(None, overrides={
                "api.base_url": url, "api.username": "demo.till", "limits.rate_per_minute": 10**9,
                "limits.concurrency": 64, "output.dir": str(folder / "out"),
                "state.only_changed": only_changed,
            }, environ={"BATCH_UPDATER_PASSWORD": "demo-password"})

        import pandera.pandas  # noqa: F401 - imported up front, as in a long run
        export = write(folder / "export.csv", args.rows, set())
        fill, first = timed(config(False), export)
        same, unchanged = timed(config(True), export, restart=True)
        export = write(folder / "export.csv", args.rows, changed)
        delta, third = timed(config(True), export)
        alone_file = write(folder / "changed-only.csv", args.rows, changed, only=True)
        alone, baseline = timed(config(False), alone_file)
        began = time.perf_counter()
        for _ in open_input(export, config(False).input).chunks():
            pass
        floor = time.perf_counter() - began
    print(f"rows={args.rows:,} changed={len(changed):,}")
    print(f"{'step':52} {'seconds':>8} {'requests':>9} {'rows/s':>9}")
    print(f"{'1. first full run (fills the state)':52} {fill:8.1f} {first.requests:9,} {args.rows / fill:9,.0f}")
    print(f"{'2. same file, --only-changed (all unchanged)':52} {same:8.1f} {unchanged.requests:9,}"
          f" {args.rows / same:9,.0f}")
    print(f"{'3. 1% changed, --only-changed':52} {delta:8.1f} {third.requests:9,} {args.rows / delta:9,.0f}")
    print(f"{'4. baseline: only the changed rows, sent in full':52} {alone:8.1f} {baseline.requests:9,}"
          f" {len(changed) / alone:9,.0f}")
    print(f"{'5. floor: reading the file alone':52} {floor:8.1f} {0:9,} {args.rows / floor:9,.0f}")
    print(f"step 3 - step 4 = {delta - alone:.1f} s (target <= 60 s); unchanged path"
          f" {args.rows / same:,.0f} rows/s (target >= 100,000)")
    assert unchanged.requests == 0 and third.requests == len(changed), "wrong rows sent"


if __name__ == "__main__":
    main()
