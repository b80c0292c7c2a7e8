"""Helper of scripts/airflow_check.sh (run with the check's venv, where batch-updater and
Airflow are installed): writes the input file, then checks a finished run of the sample DAG.

    python airflow_check.py write-input CSV --rows N --customers N
    python airflow_check.py check --input CSV --output-dir DIR --sandbox URL --limit N
        --window S --shards N --dag-log FILE --airflow-home DIR --wall SECONDS
        --airflow-version V --executor NAME --dags-test-exit TEXT

`check` prints one block of figures and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import urllib.request
from collections import Counter
from pathlib import Path

from batch_updater.input.shards import Shard
from batch_updater.rows.payload import customer_key
from batch_updater.sandbox import max_in_window  # the sandbox's own measure: windows (t - w, t]

REPORTS = ("success.csv", "errors.csv", "skipped.csv")


def mobile(i: int) -> str:
    """Seeded sandbox customer i's mobile (batch-updater sandbox --help)."""
    return f"9198{i:08d}"


def write_input(path: Path, rows: int, customers: int) -> None:
    """`rows` data rows, nearly all seeded customers (so sent and updated), plus a few rows
    that the merged reports must also hold once: customers the sandbox does not know (API
    errors), invalid mobiles (validation errors), a blank row (skipped) and a customer's
    second row (same shard as its first)."""
    cities = ["Pune", "Chennai", "Kochi", "Bengaluru", "Mysuru"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identifierValue", "firstName", "extendedFields.city"])
        for i in range(rows):
            if i == rows // 2:
                writer.writerow(["", "", ""])
            elif i % 97 == 13:
                writer.writerow([mobile(customers + 1000 + i), f"Unknown{i}", "Pune"])
            elif i % 89 == 7:
                writer.writerow(["12345", f"Invalid{i}", "Pune"])
            elif i == rows // 2 + 1:
                writer.writerow([mobile(i - 2), f"Second{i}", "Kochi"])
            else:
                writer.writerow([mobile(i % customers), f"Name{i}", cities[i % len(cities)]])


def fetch_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


def read_rows(path: Path) -> list[int]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [int(row["_row"]) for row in csv.DictReader(handle)]


def check(args: argparse.Namespace) -> int:
    failures: list[str] = []

    def expect(ok: bool, message: str) -> bool:
        if not ok:
            failures.append(message)
        return ok

    with open(args.input, newline="", encoding="utf-8") as handle:
        input_rows = sum(1 for _ in csv.reader(handle)) - 1

    # 1. the merged reports: every input row exactly once
    merged = sorted(Path(args.output_dir).glob("merged-*"))
    merged_rows: list[int] = []
    per_report: dict[str, int] = {}
    merged_summary: dict = {}
    if expect(len(merged) == 1, f"expected one merged folder in {args.output_dir}, found {len(merged)}"):
        folder = merged[0]
        for name in REPORTS:
            rows = read_rows(folder / name) if (folder / name).exists() else []
            per_report[name.split(".")[0]] = len(rows)
            merged_rows += rows
        merged_summary = json.loads((folder / "summary.json").read_text())
    duplicates = sorted(row for row, n in Counter(merged_rows).items() if n > 1)
    expect(not duplicates, f"rows in more than one merged report or twice in one: {duplicates[:10]}")
    expect(len(merged_rows) == input_rows,
           f"merged success+errors+skipped hold {len(merged_rows)} rows, the input {input_rows}")
    expect(set(merged_rows) == set(range(2, input_rows + 2)),
           "the merged reports' _row values are not the input's rows 2..N+1")
    expect(merged_summary.get("rows") == input_rows,
           f"the merged summary counts {merged_summary.get('rows')} rows, the input has {input_rows}")
    shard_summaries = merged_summary.get("shards", [])
    expect(sorted(s.get("shard") or "" for s in shard_summaries)
           == sorted(f"{k}/{args.shards}" for k in range(1, args.shards + 1)),
           f"the merged summary's shards are {[s.get('shard') for s in shard_summaries]}")

    # 2. the task logs: no "XCom not found", and the run succeeded
    logs = [Path(args.dag_log), *sorted(Path(args.airflow_home, "logs").rglob("*.log"))]
    xcom_missing = [str(p) for p in logs if p.is_file() and "XCom not found" in p.read_text(errors="replace")]
    expect(not xcom_missing, f'"XCom not found" in {xcom_missing}')
    dag_log = Path(args.dag_log).read_text(errors="replace")
    expect(re.search(r"DagRun Finished: dag_id=capillary_customer_sync.*state=success", dag_log) is not None
           or "state: success" in dag_log, "the DAG run did not finish in state success")

    # 3. the sandbox's record: the key's limit in every window, no 429
    record = fetch_json(f"{args.sandbox}/__sandbox/requests")
    starts = [r["started"] for r in record]
    statuses = Counter(r["status"] for r in record)
    busiest = max_in_window(starts, args.window)
    expect(busiest <= args.limit, f"{busiest} requests in one {args.window:g} s window, the limit is {args.limit}")
    expect(statuses.get(429, 0) == 0, f"{statuses.get(429, 0)} answers 429")
    expect(len(record) == merged_summary.get("requests"),
           f"the sandbox saw {len(record)} requests, the merged summary counts {merged_summary.get('requests')}")

    # 4. parallel shards: each shard's requests (by the customer's hash) span a time; all
    # shards were sending at once when the spans overlap, and their requests interleave
    by_shard: dict[int, list[float]] = {}
    order = []
    for r in sorted(record, key=lambda r: r["started"]):
        value = (r.get("query") or {}).get("identifierValue")
        if r["method"] != "PUT" or value is None:
            continue
        key = customer_key("mobile", value)
        k = next(k for k in range(1, args.shards + 1) if Shard(k, args.shards).owns(key))
        by_shard.setdefault(k, []).append(r["started"])
        order.append(k)
    switches = sum(a != b for a, b in zip(order, order[1:]))
    all_busy_from = max((s[0] for s in by_shard.values()), default=0.0)
    all_busy_to = min((s[-1] for s in by_shard.values()), default=0.0)
    overlapped = len(by_shard) == args.shards and all_busy_to > all_busy_from
    expect(overlapped, "the shards did not all send at the same time (serial run?)")
    expect(switches >= len(order) // 4, f"the shards' requests barely interleave ({switches} switches"
           f" in {len(order)} requests)")
    during = [t for t in starts if all_busy_from <= t <= all_busy_to]
    span = all_busy_to - all_busy_from
    used = (len(during) - 1) / span / (args.limit / args.window) if overlapped and span > 0 else 0.0
    first, last = (min(starts), max(starts)) if starts else (0.0, 0.0)

    per_shard_rows = {}
    for s in shard_summaries:
        try:
            per_shard_rows[s["shard"]] = json.loads(Path(s["summary"]).read_text())
        except (OSError, ValueError, KeyError):
            pass
    shares = [round(per_shard_rows[k].get("rate_limit_per_minute", 0) * args.window / 60)
              for k in sorted(per_shard_rows)]
    expect(len(shares) == args.shards and sum(shares) <= args.limit,
           f"the shards ran with {shares} requests per window: more than the key's {args.limit}")

    print("== airflow check: figures ==")
    print(f"airflow            {args.airflow_version}, executor {args.executor}")
    print(f"shards             {args.shards} (rows per shard:"
          f" {', '.join(str(per_shard_rows[k].get('rows')) for k in sorted(per_shard_rows))};"
          f" requests per shard: {', '.join(str(len(by_shard.get(k, []))) for k in sorted(by_shard))})")
    print(f"rows               {input_rows} in the input; merged: {len(merged_rows)} ="
          f" {per_report.get('success', 0)} success + {per_report.get('errors', 0)} errors"
          f" + {per_report.get('skipped', 0)} skipped; duplicate _row: {len(duplicates)}")
    print(f"requests           {len(record)} at the sandbox (merged summary: {merged_summary.get('requests')});"
          f" statuses {dict(sorted((str(k), v) for k, v in statuses.items()))}")
    print(f"max per window     {busiest} in {args.window:g} s; limit {args.limit}"
          f" (the shards' shares: {' + '.join(map(str, shares))} = {sum(shares)} per window)")
    print(f"429s               {statuses.get(429, 0)}")
    print(f"wall time          {args.wall:.1f} s from airflow dags test's start to the DAG run's end;"
          f" requests from first to last {last - first:.1f} s")
    print(f"dags test process  {args.dags_test_exit}")
    print(f"shards overlapped  {'yes' if overlapped else 'NO'}: all {len(by_shard)} sending together for"
          f" {max(span, 0):.1f} s, {switches} shard switches in {len(order)} requests;"
          f" limit used {used:.0%} while all had work")
    print(f"XCom not found     {len(xcom_missing)} log files")
    stores = sorted({(s.get("config", {}).get("state", {}).get("url") or "SQLite in the output folder")
                     for s in per_shard_rows.values()})
    print(f"job state          {', '.join(stores)}")
    if failures:
        print("FAILED:")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("PASSED")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write-input")
    write.add_argument("path", type=Path)
    write.add_argument("--rows", type=int, required=True)
    write.add_argument("--customers", type=int, required=True)
    checking = commands.add_parser("check")
    for name in ("--input", "--output-dir", "--sandbox", "--dag-log", "--airflow-home",
                 "--airflow-version", "--executor", "--dags-test-exit"):
        checking.add_argument(name, required=True)
    checking.add_argument("--limit", type=int, required=True)
    checking.add_argument("--window", type=float, required=True)
    checking.add_argument("--shards", type=int, required=True)
    checking.add_argument("--wall", type=float, required=True)
    args = parser.parse_args(argv)
    if args.command == "write-input":
        write_input(args.path, args.rows, args.customers)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
