"""Throughput without a rate limit: our pipeline vs a bare aiohttp loop vs a requests loop.

    .venv/bin/python bench/bench_throughput.py [--rows 20000] [--latency-ms 0] [--repeat 3]
                                               [--requests-rows 3000] [--diagnose] [--json PATH]

The sandbox runs in its own process on 127.0.0.1, with LATENCY ms added to every answer.
Variants, interleaved round by round so that machine noise hits each alike:

- bare aiohttp loop: one ClientSession, CONCURRENCY workers, the same payloads (built
  before the clock starts), each PUT read to the end; nothing else.
- batch-updater, full pipeline: `runner.run` from the CSV on disk to the reports (read,
  validate, map, send, journal, state store, reports, summary), timed whole.
- with --diagnose, the full pipeline again with one part switched off, to show where the
  difference to the bare loop goes: the journal's writes, the state store, the reports.
- pandas.iterrows + requests.Session: the hand-written script this tool replaces (run once,
  on --requests-rows rows; skipped when `requests` is not installed: it is no dependency).

Figures: median rows/s per variant, and the median of the per-round ratios to the bare loop
(a ratio of two runs made seconds apart is steadier than a ratio of medians on a busy
machine). With latency, the ceiling is CONCURRENCY / latency, and the figure is our rows/s
over it. Targets (issue 6): >= 80% of the bare loop, >= 5x the requests loop, and with
50 ms latency >= 90% of concurrency / latency.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import orjson
from sandbox_process import sandbox_process

from batch_updater import runner as runner_module
from batch_updater.config import load_config
from batch_updater.output import reports as reports_module
from batch_updater.runner import run
from batch_updater.send.client import basic_authorization
from batch_updater.state.journal import Journal
from batch_updater.state.sync_state import ChangeFilter, SyncState

HEADER = ["identifierValue", "firstName", "lastName", "extendedFields.city"]
CONCURRENCY = 64
TARGET_VS_BARE = 0.80
TARGET_VS_REQUESTS = 5.0
TARGET_VS_CEILING = 0.90


def make_input(folder: Path, rows: int) -> Path:
    path = folder / "customers.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            writer.writerow([f"9198{i:08d}", f"First{i}", f"Last{i}", "Mysuru"])
    return path


def pipeline_config(url: str, folder: Path):
    return load_config(None, overrides={
        "api.base_url": url, "api.username": "demo.till", "limits.rate_per_minute": 10**9,
        "limits.concurrency": CONCURRENCY, "output.dir": str(folder / "out"),
    }, environ={"BATCH_UPDATER_PASSWORD": "demo-password"})


# Parts of the pipeline a --diagnose variant switches off (the figures say what they cost).
SWITCHED_OFF = {
    "journal writes off": [(Journal, "mark_in_flight", lambda self, row: None),
                           (Journal, "record", lambda self, outcome: None),
                           (Journal, "acknowledge", lambda self, outcome: None)],
    "state store off": [(SyncState, "flush", lambda self: None),
                        (ChangeFilter, "sending", lambda self, rows, keys, digests: None),
                        (ChangeFilter, "answered", lambda self, row, applied: None)],
    "reports off": [(runner_module, "write_reports",
                     lambda *args, **kwargs: reports_module.ReportCounts())],
}


def pipeline(url: str, source: Path, folder: Path, rows: int, switched_off: str | None = None) -> float:
    config = pipeline_config(url, folder)
    with ExitStack() as patches:
        for owner, name, replacement in SWITCHED_OFF.get(switched_off, []):
            patches.enter_context(mock.patch.object(owner, name, replacement))
        began = time.perf_counter()
        summary = run(config, source, restart=True)
        elapsed = time.perf_counter() - began
    assert summary.requests >= rows, summary
    return rows / elapsed


def payloads(source: Path) -> list[tuple[str, bytes]]:
    out = []
    with open(source, newline="") as handle:
        for row in csv.DictReader(handle):
            query = f"source=INSTORE&identifierName=mobile&identifierValue={row['identifierValue']}"
            body = {"profiles": [{"firstName": row["firstName"], "lastName": row["lastName"]}],
                    "extendedFields": {"city": row["extendedFields.city"]}}
            out.append((query, orjson.dumps(body)))
    return out


async def bare_aiohttp(url: str, items: list[tuple[str, bytes]]) -> float:
    headers = {"Content-Type": "application/json",
               "Authorization": basic_authorization("demo.till", "demo-password")}
    queue: asyncio.Queue = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    began = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        async def worker() -> None:
            while not queue.empty():
                query, body = queue.get_nowait()
                async with session.put(f"{url}/v2/customers/lookup?{query}", data=body, headers=headers) as r:
                    await r.read()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(items) / (time.perf_counter() - began)


def requests_loop(url: str, source: Path, rows: int) -> float | None:
    """The script this tool replaces: pandas.iterrows and one requests.Session, one PUT at a time."""
    try:
        import pandas as pd
        import requests
    except ImportError:
        return None
    headers = {"Authorization": basic_authorization("demo.till", "demo-password")}
    began = time.perf_counter()
    with requests.Session() as session:
        frame = pd.read_csv(source, dtype=str, nrows=rows)
        for _, row in frame.iterrows():
            session.put(f"{url}/v2/customers/lookup", headers=headers, json={
                "profiles": [{"firstName": row["firstName"], "lastName": row["lastName"]}],
                "extendedFields": {"city": row["extendedFields.city"]}},
                params={"source": "INSTORE", "identifierName": "mobile",
                        "identifierValue": row["identifierValue"]})
    return rows / (time.perf_counter() - began)


def measure(rows: int, latency_ms: float, repeat: int, requests_rows: int, diagnose: bool) -> dict:
    variants = ["full pipeline"] + (list(SWITCHED_OFF) if diagnose else [])
    with tempfile.TemporaryDirectory() as tmp, \
            sandbox_process("--customers", str(rows), "--no-record", "--latency-ms", str(latency_ms)) as url:
        folder = Path(tmp)
        source = make_input(folder, rows)
        items = payloads(source)
        # Warm-up, untimed: imports pandas and pandera once, as a long run pays them once.
        run(pipeline_config(url, folder), source, dry_run=True)
        bare: list[float] = []
        ours: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeat):
            bare.append(asyncio.run(bare_aiohttp(url, items)))
            for name in variants:
                ours[name].append(pipeline(url, source, folder, rows, None if name == "full pipeline" else name))
        slow = requests_loop(url, source, min(rows, requests_rows))
    result = {
        "rows": rows, "latency_ms": latency_ms, "concurrency": CONCURRENCY, "repeat": repeat,
        "cores": os.cpu_count(), "bare_rows_per_s": statistics.median(bare), "bare_runs": bare,
        "variants": {name: {"rows_per_s": statistics.median(runs), "runs": runs,
                            "vs_bare": statistics.median(o / b for o, b in zip(runs, bare))}
                     for name, runs in ours.items()},
        "requests_rows": min(rows, requests_rows) if slow else 0, "requests_rows_per_s": slow,
    }
    full = result["variants"]["full pipeline"]
    result["ours_rows_per_s"], result["ours_vs_bare"] = full["rows_per_s"], full["vs_bare"]
    result["ours_vs_requests"] = full["rows_per_s"] / slow if slow else None
    if latency_ms:
        ceiling = CONCURRENCY / (latency_ms / 1000)
        result["ceiling_rows_per_s"] = ceiling
        result["ours_vs_ceiling"] = full["rows_per_s"] / ceiling
        result["bare_vs_ceiling"] = result["bare_rows_per_s"] / ceiling
    return result


def show(r: dict) -> None:
    print(f"rows={r['rows']} latency={r['latency_ms']:g} ms concurrency={r['concurrency']} cores={r['cores']}"
          f" median of {r['repeat']} interleaved rounds")
    print(f"{'variant':40} {'rows/s':>9} {'vs bare':>8}")
    print(f"{'bare aiohttp loop (baseline)':40} {r['bare_rows_per_s']:9.0f} {1:8.2f}")
    for name, v in r["variants"].items():
        label = "batch-updater, " + name
        print(f"{label:40} {v['rows_per_s']:9.0f} {v['vs_bare']:8.2f}")
    if r["requests_rows_per_s"]:
        slow = r["requests_rows_per_s"]
        print(f"{'pandas.iterrows + requests.Session':40} {slow:9.0f} {slow / r['bare_rows_per_s']:8.2f}"
              f"   ({r['requests_rows']} rows, once)")
        print(f"full pipeline vs requests loop: {r['ours_vs_requests']:.1f}x (target >= {TARGET_VS_REQUESTS:g}x)")
    else:
        print("pandas.iterrows + requests.Session: skipped (`requests` is not installed;"
              " `.venv/bin/pip install requests` to include it)")
    print(f"full pipeline vs bare loop: {r['ours_vs_bare']:.2f} (target >= {TARGET_VS_BARE:.2f})")
    if r["latency_ms"]:
        print(f"concurrency / latency = {r['ceiling_rows_per_s']:.0f} rows/s; full pipeline reaches"
              f" {r['ours_vs_ceiling']:.1%} of it, the bare loop {r['bare_vs_ceiling']:.1%}"
              f" (target >= {TARGET_VS_CEILING:.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians are shown")
    parser.add_argument("--requests-rows", type=int, default=3000,
                        help="rows for the requests loop (it is slow: about 1,000 rows/s at 0 ms)")
    parser.add_argument("--diagnose", action="store_true",
                        help="also run the pipeline with the journal, the state store or the reports off")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = measure(args.rows, args.latency_ms, args.repeat, args.requests_rows, args.diagnose)
    show(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
