"""Upsert pacing: updates and adds on their own budgets, against a strict server for each.

    .venv/bin/python bench/bench_upsert.py [--limit 100] [--add-limit 50] [--window 3]
                                           [--windows 5] [--new-share 0.5] [--concurrency 16]
                                           [--latency-ms 20] [--json PATH]

The sandbox runs in its own process with two rolling-window limits (updates, adds),
answering 429 beyond either. A file where NEW_SHARE of the customers do not exist yet is
run in upsert mode: every row is sent as an update, the missing ones are then added. With
the default figures both budgets have work all along (a row in two needs an add, and the
add limit is half the update limit). Figures come from the server's record, per budget:
achieved share of its limit while it had work (first to last arrival), 429s, the busiest
rolling window. The baseline in the same run is the same file in update mode once the
upsert has created its customers: every row an update, on the update budget alone (so
rows/s compares an upsert with a plain update of as many rows).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from sandbox_process import sandbox_process

from batch_updater.config import load_config
from batch_updater.runner import run
from batch_updater.sandbox import max_in_window

DEFAULT_MARGIN_SHARE = 0.25 / 60.0


def make_input(folder: Path, rows: int, new_share: float) -> Path:
    path = folder / "migration.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identifierValue", "firstName"])
        for i in range(rows):
            new = (i * new_share) % 1 + new_share >= 1  # spread evenly through the file
            writer.writerow([f"9199{i:08d}" if new else f"9198{i:08d}", f"First{i}"])
    return path


def server_records(url: str, since: int) -> list[dict]:
    with urllib.request.urlopen(f"{url}/__sandbox/requests?since={since}") as answer:
        return [r for r in orjson.loads(answer.read()) if r["method"] in ("PUT", "POST")]


def last_seq(url: str) -> int:
    with urllib.request.urlopen(f"{url}/__sandbox/requests") as answer:
        return max((r["seq"] for r in orjson.loads(answer.read())), default=0)


def lane(records: list[dict], method: str, limit: int, window: float) -> dict:
    mine = [r for r in records if r["method"] == method]
    admitted = sorted(r["started"] for r in mine if r["admitted"])
    span = admitted[-1] - admitted[0] if len(admitted) > 1 else 0.0
    return {"requests": len(mine), "throttled": sum(r["status"] == 429 for r in mine),
            "share": (len(admitted) - 1) / span * window / limit if span else 0.0,
            "max_window": max_in_window(sorted(r["started"] for r in mine), window), "limit": limit}


def measure(name: str, mode: str, url: str, source: Path, folder: Path, args: argparse.Namespace) -> dict:
    config = load_config(None, overrides={
        "api.base_url": url, "api.username": "demo.till", "output.dir": str(folder / name), "api.mode": mode,
        "limits.rate_per_minute": args.limit, "limits.window_seconds": args.window,
        "limits.window_margin_seconds": args.margin, "limits.concurrency": args.concurrency,
        "limits.max_attempts": 10, "limits.create.rate_per_minute": args.add_limit,
        "limits.create.window_seconds": args.window,
    }, environ={"BATCH_UPDATER_PASSWORD": "demo-password"})
    since = last_seq(url)
    began = time.monotonic()
    summary = run(config, source)
    seconds = time.monotonic() - began
    records = server_records(url, since)
    return {"name": name, "rows": summary.rows, "updated": summary.updated, "created": summary.created,
            "errors": summary.errors, "seconds": seconds, "rows_per_second": summary.rows / seconds,
            "updates": lane(records, "PUT", args.limit, args.window),
            "adds": lane(records, "POST", args.add_limit, args.window)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="updates per window")
    parser.add_argument("--add-limit", type=int, default=50, help="adds per window")
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--new-share", type=float, default=0.5, help="share of customers that do not exist yet")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    args.margin = args.window * DEFAULT_MARGIN_SHARE
    rows = args.limit * args.windows
    with tempfile.TemporaryDirectory() as tmp, \
            sandbox_process("--rate-limit", str(args.limit), "--create-rate-limit", str(args.add_limit),
                            "--rate-window", str(args.window), "--latency-ms", str(args.latency_ms),
                            "--customers", str(rows)) as url:
        folder = Path(tmp)
        source = make_input(folder, rows, args.new_share)
        run(load_config(None, overrides={"api.base_url": url, "api.username": "demo.till",
                                         "output.dir": str(folder / "warm-up")},
                        environ={"BATCH_UPDATER_PASSWORD": "demo-password"}), source, dry_run=True)
        results = [measure("upsert (two budgets)", "upsert", url, source, folder, args)]
        time.sleep(args.window)  # let the server's windows empty
        results.append(measure("update only (baseline)", "update", url, source, folder, args))

    print(f"strict server: {args.limit} updates and {args.add_limit} adds per {args.window:g} s rolling window;"
          f" {rows} rows, {args.new_share:.0%} new customers, concurrency {args.concurrency},"
          f" latency {args.latency_ms:g} ms")
    print(f"{'run':24} {'lane':8} {'achieved/limit':>14} {'429s':>5} {'max/window':>10} {'requests':>8}"
          f" {'rows/s':>7} {'created':>7} {'errors':>6}")
    for r in results:
        for name in ("updates", "adds"):
            figures = r[name]
            if not figures["requests"]:
                continue
            print(f"{r['name']:24} {name:8} {figures['share']:14.2%} {figures['throttled']:5d}"
                  f" {figures['max_window']:>5d}/{figures['limit']:<4d} {figures['requests']:8d}"
                  f" {r['rows_per_second']:7.1f} {r['created']:7d} {r['errors']:6d}")
    ours = results[0]
    ok = all(ours[name]["share"] >= 0.95 and ours[name]["throttled"] == 0
             and ours[name]["max_window"] <= ours[name]["limit"] for name in ("updates", "adds"))
    print("target: each lane >= 95% of its limit while it has work, zero 429s, no window over the limit")
    print("RESULT:", "OK" if ok else "BELOW TARGET")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "ok": ok, "results": results}, indent=2))


if __name__ == "__main__":
    main()
