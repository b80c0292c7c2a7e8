"""report.html of a 1M-row job: its size and build time, against the summary-only page.

    .venv/bin/python bench/bench_report.py [--rows 1000000] [--minutes 1700] [--errors 20000] [--repeat 3]
                                           [--json PATH] [--keep DIR]

A synthetic job, as a 1M-row run at 600/min leaves it: a journal whose `minute` table
holds `--minutes` minutes over two runs (the first stopped by --max-runtime, the second
resumed the next night; 429 bursts, a few 5xx, a slow hour), each run's summary.json, and
an errors.csv of `--errors` rows in realistic groups (validation problems, 8015 not
found, network failures), grouped into top_errors as the reports do. Built:

1. in a fresh process (matplotlib's import included), as `batch-updater report` would;
2. in this process, median of `--repeat` (matplotlib already imported);
3. the baseline in this process: the same page without the journal (no charts drawn).
Targets (issue 19): under ~1 MB and ~5 s for a 1M-row run.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch_updater.outcomes import RowOutcome, Stage, Status
from batch_updater.output.html_report import build_report
from batch_updater.output.reports import ERROR_COLUMNS
from batch_updater.output.tallies import ErrorGroups
from batch_updater.state.journal import Journal

HEADER = ["identifierValue", "firstName", "lastName", "extendedFields.city"]
START = 1_796_342_400  # a night's 00:00 UTC
NIGHT = 86_400
# (share of the errors, stage, code, message, HTTP status)
CAUSES = ((0.40, "validation", "", 'identifierValue "{v}" is not a mobile number: digits only with the country'
           " code, 8 to 15 digits (e.g. 919845012345)", ""),
          (0.15, "validation", "", 'extendedFields.dateOfBirth "{v}" is not a date (YYYY-MM-DD)', ""),
          (0.25, "api", "8015", "Customer not found for the given identifiers", "400"),
          (0.10, "api", "1046", "Invalid email id {e}", "400"),
          (0.06, "network", "", "no answer after 3 attempts: timeout", ""),
          (0.04, "api", "HTTP 503", "Service Unavailable", "503"))


def minutes_of(first: int, count: int, rng: random.Random) -> list[tuple]:
    """A run's minutes at ~600/min: 429 bursts now and then, a few 5xx, one slow hour."""
    rows = []
    for i in range(count):
        slow = 300 <= i < 360
        throttled = rng.choice((0,) * 30 + (3, 8))
        server = rng.choice((0,) * 20 + (1,))
        requests = 600 - (120 if slow else 0) + throttled
        p50 = rng.gauss(240 if slow else 85, 6)
        statuses = json.dumps({"200": requests - throttled - server, **({"429": throttled} if throttled else {}),
                               **({"503": server} if server else {})})
        rows.append((first + i * 60, requests, 0, throttled + server, throttled, server, rng.choice((0,) * 40 + (1,)),
                     statuses, round(p50, 2), round(p50 * 2.8, 2), round(p50 * 6, 2)))
    return rows


def write_errors(path: Path, errors: int, rows: int, rng: random.Random) -> ErrorGroups:
    groups = ErrorGroups()
    picked = sorted(rng.sample(range(2, rows + 2), errors))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER + ERROR_COLUMNS)
        for row in picked:
            _, stage, code, message, status = rng.choices(CAUSES, weights=[c[0] for c in CAUSES])[0]
            text = message.format(v=rng.choice(("98450", "n/a", "919845x12345")), e=f"user{row}@example.com")
            attempts = "0" if stage == "validation" else "1"
            writer.writerow([f"9198{row:08d}", f"First{row}", f"Last{row}", "Pune", row, row, stage,
                             code if not code.startswith("HTTP") else "", text, status, attempts, "false", "fix"])
            groups.add(RowOutcome(row, Status.ERROR, Stage(stage), "" if code.startswith("HTTP") else code, text,
                                  int(status) if status else None))
    return groups


def summary_of(folder: Path, args, groups: ErrorGroups, started: int, minutes: list[tuple], last: bool) -> dict:
    """The run's summary.json, its request figures those of its minutes."""
    rows, errors = args.rows, args.errors if last else 0
    not_sent = 0 if last else rows * 2 // 5
    success = rows - errors - 2_000 - not_sent
    statuses: dict[str, int] = {}
    for minute in minutes:
        for code, count in json.loads(minute[7]).items():
            statuses[code] = statuses.get(code, 0) + count
    requests, retries, throttled = (sum(m[i] for m in minutes) for i in (1, 3, 4))
    refused = errors * 39 // 100  # the API's 400s (8015, 1046), among the minutes' 200s
    statuses.update({"200": statuses["200"] - refused, "400": refused} if refused else {})
    return {"exit_code": 1 if last else 4, "status": "completed_with_errors" if last else "stopped",
            "input": "/srv/exports/customers.csv", "job_id": "3f9a1c2b7d4e", "rows": rows, "success": success,
            "errors": errors, "skipped": 2_000, "not_sent": not_sent, "validation_errors": errors * 55 // 100,
            "api_errors": refused, "network_errors": errors * 6 // 100, "in_doubt": 3,
            "in_doubt_requests": 4, "requests": requests, "retries": retries, "throttled": throttled,
            "http_statuses": statuses, "started": time_of(started), "finished": time_of(started + len(minutes) * 60),
            "duration_seconds": len(minutes) * 60.0, "achieved_rate_per_minute": round(requests / len(minutes), 1),
            "rate_limit_per_minute": 600,
            "reason": None if last else "--max-runtime 16h40m reached", "reports": {
                name: str(folder / f"{name}.csv") for name in ("success", "errors", "skipped")},
            "config": {"api": {"base_url": "https://eu.api.capillarytech.com", "source": "INSTORE",
                               "identifier_name": "mobile", "mode": "update", "username": "store.till"},
                       "limits": {"rate_per_minute": 600, "window_seconds": 60.0, "concurrency": 16},
                       "columns": {}},
            "resumed": last, "to_send_again": 0 if last else not_sent, "warnings": {"91015": 1_204},
            "updated_with_warnings": 1_204, "top_errors": [g.as_dict() for g in groups.top()] if last else [],
            "mode": "update", "updated": success, "created": 0}


def time_of(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def make_job(root: Path, args) -> Path:
    """The job folder; returns its last run's folder."""
    rng = random.Random(19)
    job = root / "customers-3f9a1c2b7d4e"
    first_minutes = args.minutes * 3 // 5
    runs = [("run-20261204T000000Z", START, first_minutes),
            ("run-20261205T000000Z", START + NIGHT, args.minutes - first_minutes)]
    job.mkdir(parents=True)
    minutes = {name: minutes_of(started, count, rng) for name, started, count in runs}
    with Journal(job / "journal.sqlite") as journal:
        for name, rows in minutes.items():
            journal.record_minutes(name, rows)
    for n, (name, started, _) in enumerate(runs):
        (job / name).mkdir()
        last = n == len(runs) - 1
        groups = write_errors(job / name / "errors.csv", args.errors if last else 0, args.rows, rng)
        summary = summary_of(job / name, args, groups, started, minutes[name], last)
        (job / name / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return job / runs[-1][0]


def timed_build(folder: Path) -> tuple[float, int]:
    began = time.perf_counter()
    page = build_report(folder)
    return time.perf_counter() - began, len(page.encode())


def fresh_process_build(folder: Path) -> float:
    code = ("import sys, time; t = time.perf_counter(); from batch_updater.output.html_report import"
            " write_report_html; write_report_html(sys.argv[1]); print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return float(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--minutes", type=int, default=1_700)
    parser.add_argument("--errors", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", help="build the job in this folder and keep it (to open report.html)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        folder = make_job(root, args)
        cold = fresh_process_build(folder)
        size = (folder / "report.html").stat().st_size
        warm = [timed_build(folder)[0] for _ in range(args.repeat)]
        journal = folder.parent / "journal.sqlite"
        journal.rename(journal.with_suffix(".aside"))  # the baseline: no minutes, so no charts drawn
        baseline = [timed_build(folder) for _ in range(args.repeat)]
        journal.with_suffix(".aside").rename(journal)

    base_seconds, base_size = statistics.median(t for t, _ in baseline), baseline[0][1]
    print(f"report.html of a {args.rows:,}-row job ({args.minutes:,} minutes over 2 runs, errors.csv"
          f" {args.errors:,} rows):")
    print(f"  size                                        {size / 1024:8,.0f} KB   (target < 1,024 KB)")
    print(f"  build, fresh process (matplotlib imported)  {cold:8.2f} s    (target < 5 s)")
    print(f"  build, this process (median of {args.repeat})          {statistics.median(warm):8.2f} s")
    print(f"  baseline: no journal (no time charts)       {base_seconds:8.2f} s, {base_size / 1024:,.0f} KB")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": args.rows, "minutes": args.minutes, "errors": args.errors, "size_bytes": size,
            "fresh_process_seconds": cold, "warm_seconds": statistics.median(warm),
            "baseline_seconds": base_seconds, "baseline_size_bytes": base_size}, indent=2))


if __name__ == "__main__":
    main()
