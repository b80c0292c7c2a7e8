"""Throughput on the no-limit path: our pipeline vs a bare aiohttp loop vs a requests loop.

    .venv/bin/python bench/bench_throughput.py [--rows 20000] [--latency-ms 0]

The sandbox runs in its own process on 127.0.0.1. Our pipeline is measured whole
(read, validate, map, send, journal, reports) and once more with the journal's writes
switched off, which is the journal's overhead (issue 5's target: at most 10%).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from batch_updater.client import basic_authorization  # noqa: E402
from batch_updater.config import load_config  # noqa: E402
from batch_updater.journal import Journal  # noqa: E402
from batch_updater.runner import run  # noqa: E402
from sandbox_process import sandbox_process  # noqa: E402

HEADER = ["identifierValue", "firstName", "lastName", "extendedFields.city"]
CONCURRENCY = 64


def make_input(folder: Path, rows: int) -> Path:
    path = folder / "customers.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            writer.writerow([f"9198{i:08d}", f"First{i}", f"Last{i}", "Mysuru"])
    return path


def pipeline(url: str, source: Path, folder: Path, *, journal: bool = True) -> float:
    config = load_config(None, overrides={
        "api.base_url": url, "api.username": "demo.till", "limits.rate_per_minute": 10**9,
        "limits.concurrency": CONCURRENCY, "output.dir": str(folder / "out"),
    }, environ={"BATCH_UPDATER_PASSWORD": "demo-password"})
    saved = Journal.mark_in_flight, Journal.record
    if not journal:
        Journal.mark_in_flight = lambda self, row: None
        Journal.record = lambda self, outcome: None
    try:
        began = time.perf_counter()
        summary = run(config, source, restart=True)
        elapsed = time.perf_counter() - began
    finally:
        Journal.mark_in_flight, Journal.record = saved
    assert summary.requests >= summary.rows, summary
    return summary.rows / elapsed


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; the median is shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            sandbox_process("--customers", str(args.rows), "--no-record",
                            "--latency-ms", str(args.latency_ms)) as url:
        folder = Path(tmp)
        source = make_input(folder, args.rows)
        items = payloads(source)
        import pandera.pandas  # noqa: F401 - imported once up front, as a long run would
        results: dict[str, list[float]] = {"bare": [], "ours": [], "no_journal": []}
        for _ in range(args.repeat):  # interleaved, so machine noise hits every variant alike
            results["bare"].append(asyncio.run(bare_aiohttp(url, items)))
            results["ours"].append(pipeline(url, source, folder))
            results["no_journal"].append(pipeline(url, source, folder, journal=False))
        bare, ours, no_journal = (statistics.median(results[k]) for k in ("bare", "ours", "no_journal"))
        slow = requests_loop(url, source, min(args.rows, 3000))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows={args.rows} latency={args.latency_ms:g} ms concurrency={CONCURRENCY} cores={os.cpu_count()}"
          f" median of {args.repeat}")
    print(f"{'variant':40} {'rows/s':>9} {'vs bare':>8}")
    print(f"{'bare aiohttp loop (baseline)':40} {bare:9.0f} {1:8.2f}")
    print(f"{'batch-updater, full pipeline':40} {ours:9.0f} {ours / bare:8.2f}")
    print(f"{'batch-updater, journal writes off':40} {no_journal:9.0f} {no_journal / bare:8.2f}")
    if slow:
        print(f"{'pandas.iterrows + requests.Session':40} {slow:9.0f} {slow / bare:8.2f}")
        print(f"full pipeline vs requests loop: {ours / slow:.1f}x")
    if args.latency_ms:
        print(f"concurrency / latency = {CONCURRENCY / (args.latency_ms / 1000):.0f} rows/s;"
              f" full pipeline reaches {ours / (CONCURRENCY / (args.latency_ms / 1000)):.0%} of it")
    print(f"journal overhead: {(no_journal - ours) / no_journal:.1%} (target <= 10%)")
    print(f"peak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
