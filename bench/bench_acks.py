"""What durable acknowledgements cost: each answer written to the ack log at once, against
the baseline of answers waiting for the journal's group commit (the code before issue 14).

    .venv/bin/python bench/bench_acks.py [--rows 20000] [--repeat 3] [--micro-rows 200000]

- journal, per row: `Journal.acknowledge` (one write() of a JSON line, then the group
  commit) against `Journal.record` (the group commit only), with a flush every 2,000 rows,
  as the runner's timer would; interleaved round by round.
- full pipeline without a rate limit (64 workers, the sandbox in its own process): rows/s
  with acknowledge, and with acknowledge replaced by record (the baseline), interleaved.
- peak RSS of this process (both variants ran in it).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import make_input, pipeline
from sandbox_process import sandbox_process

from batch_updater.outcomes import RowOutcome, Status
from batch_updater.state.journal import Journal


def journal_us_per_row(folder: Path, rows: int, durable: bool) -> float:
    outcomes = [RowOutcome(row, Status.SUCCESS, http_status=200, attempts=1, identifier=f"9198{row:08d}")
                for row in range(2, rows + 2)]
    with Journal(folder / f"journal-{durable}-{time.monotonic_ns()}.sqlite") as journal:
        write = journal.acknowledge if durable else journal.record
        began = time.perf_counter()
        for outcome in outcomes:
            journal.mark_in_flight(outcome.row)
            write(outcome)
            if outcome.row % 2000 == 0:
                journal.flush()
        journal.flush()
        return (time.perf_counter() - began) / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--micro-rows", type=int, default=200_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        micro = {True: [], False: []}
        for _ in range(args.repeat):
            for durable in (False, True):
                micro[durable].append(journal_us_per_row(folder, args.micro_rows, durable))
        source = make_input(folder, args.rows)
        speeds = {"acks": [], "baseline": []}
        with sandbox_process("--customers", str(args.rows), "--no-record") as url:
            for _ in range(args.repeat):
                with mock.patch.object(Journal, "acknowledge", Journal.record):
                    speeds["baseline"].append(pipeline(url, source, folder, args.rows))
                speeds["acks"].append(pipeline(url, source, folder, args.rows))

    record, acknowledge = statistics.median(micro[False]), statistics.median(micro[True])
    baseline, acks = statistics.median(speeds["baseline"]), statistics.median(speeds["acks"])
    ratios = [a / b for a, b in zip(speeds["acks"], speeds["baseline"])]
    print(f"journal, {args.micro_rows:,} rows (median of {args.repeat}):")
    print(f"  record (group commit only, baseline)  {record:6.2f} us/row")
    print(f"  acknowledge (durable write + commit)  {acknowledge:6.2f} us/row   (+{acknowledge - record:.2f})")
    print(f"full pipeline, {args.rows:,} rows, no rate limit, 64 workers (median of {args.repeat}):")
    print(f"  answers wait for the group commit (baseline)  {baseline:8,.0f} rows/s")
    print(f"  answers durable at once                       {acks:8,.0f} rows/s"
          f"   (median per-round ratio {statistics.median(ratios):.3f})")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
