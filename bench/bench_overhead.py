"""Our CPU per row beyond the HTTP request itself: the whole pipeline over a fake transport.

    .venv/bin/python bench/bench_overhead.py [--rows 50000] [--repeat 3] [--json PATH]

`runner.run` runs as usual (read, validate, map, pool, journal, state store, reports), but
ApiClient._request, instead of the aiohttp request, yields to the event loop once and
classifies a canned 200 answer (the URL and the body are built before it, as for real). The
figure is process CPU time per row (every thread), which a busy machine disturbs far less
than wall time: use it to see what a change to our own code costs, where the throughput
figures' noise would hide it. A bare loop doing only the yield is the floor; variants switch
one part off to show its share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import CONCURRENCY, SWITCHED_OFF, make_input

from batch_updater.config import load_config
from batch_updater.runner import run
from batch_updater.send import client as client_module

ANSWER = b'{"createdId": 100001, "warnings": []}'


async def fake_request(self, method, url, data, auth):
    await asyncio.sleep(0)
    return client_module.classify(200, ANSWER, "application/json", None)


async def floor(rows: int) -> None:
    left = [rows]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await asyncio.sleep(0)
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def measure(rows: int, repeat: int) -> dict:
    variants = ["full pipeline", *SWITCHED_OFF]
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(client_module.ApiClient, "_request", fake_request):
        folder = Path(tmp)
        source = make_input(folder, rows)
        config = load_config(None, overrides={
            "api.base_url": "http://127.0.0.1:9", "api.username": "demo.till", "limits.rate_per_minute": 10**9,
            "limits.concurrency": CONCURRENCY, "output.dir": str(folder / "out"),
        }, environ={"BATCH_UPDATER_PASSWORD": "demo-password"})
        run(config, source, restart=True)  # warm-up: imports, file cache
        cpu: dict[str, list[float]] = {name: [] for name in ["floor", *variants]}
        for _ in range(repeat):
            began = time.process_time()
            asyncio.run(floor(rows))
            cpu["floor"].append((time.process_time() - began) / rows * 1e6)
            for name in variants:
                with ExitStack() as patches:
                    for owner, attribute, replacement in SWITCHED_OFF.get(name, []):
                        patches.enter_context(mock.patch.object(owner, attribute, replacement))
                    began = time.process_time()
                    summary = run(config, source, restart=True)
                    cpu[name].append((time.process_time() - began) / rows * 1e6)
                assert summary.requests == rows, summary
    medians = {name: statistics.median(values) for name, values in cpu.items()}
    return {"rows": rows, "repeat": repeat, "us_per_row": medians, "runs": cpu,
            "overhead_us_per_row": medians["full pipeline"] - medians["floor"]}


def show(r: dict) -> None:
    floor_us = r["us_per_row"]["floor"]
    print(f"rows={r['rows']} median of {r['repeat']}: process CPU per row over a fake transport")
    for name, value in r["us_per_row"].items():
        extra = "" if name == "floor" else f"  (+{value - floor_us:.1f} over the floor)"
        print(f"  {name:24} {value:6.1f} us/row{extra}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = measure(args.rows, args.repeat)
    show(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
