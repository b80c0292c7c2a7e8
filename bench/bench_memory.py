"""Peak memory of whole runs: 100k and 1M rows, dry run and full run against the sandbox.

    .venv/bin/python bench/bench_memory.py [--rows 100000,1000000] [--modes dry,full] [--json PATH]

Each case runs `runner.run` in a fresh Python process, and its figure is that process's
own peak RSS (resource.getrusage(RUSAGE_SELF).ru_maxrss, read by the child at its end), so
no case inherits another's heap. The input is the 14-column file of bench_validate.py
(identifier, names, loyalty type, an email channel with flags, custom and extended fields,
an external id on 20% of rows, an enrolment with an expiry date on 25%; 1% of rows
invalid); the smaller file is the first rows of the larger. Full runs go to the sandbox in
its own process, a fresh one per case (no rate limit, 64 workers, the sandbox's request log
off); a full run of a million rows takes a few minutes.

Targets (issue 6): <= 300 MB peak, and < 20% growth from 100k to 1M rows, per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_PEAK_MB = 300
TARGET_GROWTH = 0.20
CONCURRENCY = 64


def child(mode: str, path: str, url: str, out: str) -> dict:
    """One run in this (fresh) process; the peak is this process's own."""
    from batch_updater.config import load_config
    from batch_updater.runner import run

    config = load_config(None, overrides={
        "api.base_url": url, "api.username": "demo.till", "limits.rate_per_minute": 10**9,
        "limits.concurrency": CONCURRENCY, "output.dir": out,
    }, environ={"BATCH_UPDATER_PASSWORD": "demo-password"})
    began = time.perf_counter()
    summary = run(config, path, dry_run=mode == "dry")
    seconds = time.perf_counter() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "rows": summary.rows, "seconds": seconds, "peak_mb": round(peak_mb, 1),
            "success": summary.success, "errors": summary.errors, "skipped": summary.skipped,
            "exit_code": summary.exit_code}


def run_case(mode: str, path: Path, url: str, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--file", str(path), "--url", url, "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} run of {path.name} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(row_counts: list[int], modes: list[str], folder: Path) -> dict:
    from bench_validate import write_file
    from sandbox_process import sandbox_process

    biggest = max(row_counts)
    files = {}
    big = folder / f"customers-{biggest}.csv"
    write_file(big, biggest)
    for rows in sorted(row_counts):
        path = folder / f"customers-{rows}.csv"
        if rows != biggest:  # the first rows of the big file
            with open(big, "rb") as source, open(path, "wb") as target:
                for _ in range(rows + 1):
                    target.write(source.readline())
        files[rows] = path
    cases = []
    for mode in modes:
        for rows in sorted(row_counts):
            out = folder / f"out-{mode}-{rows}"
            if mode == "full":  # a fresh sandbox: no customer enrolled by an earlier case
                with sandbox_process("--customers", str(rows), "--no-record") as url:
                    case = run_case(mode, files[rows], url, out)
            else:
                case = run_case(mode, files[rows], "http://127.0.0.1:9", out)
            case["input_rows"] = rows
            cases.append(case)
    growth = {}
    for mode in modes:
        peaks = [c["peak_mb"] for c in cases if c["mode"] == mode]
        growth[mode] = peaks[-1] / peaks[0] - 1 if len(peaks) > 1 else None
    return {"cases": cases, "growth": growth, "target_peak_mb": TARGET_PEAK_MB, "target_growth": TARGET_GROWTH}


def show(result: dict) -> None:
    print(f"{'run':6} {'rows':>9} {'seconds':>8} {'rows/s':>8} {'peak RSS':>9}  outcome")
    for c in result["cases"]:
        print(f"{c['mode']:6} {c['input_rows']:9,} {c['seconds']:8.1f} {c['input_rows'] / c['seconds']:8,.0f}"
              f" {c['peak_mb']:6.0f} MB  {c['success']:,} updated, {c['errors']:,} errors,"
              f" {c['skipped']:,} skipped")
    for mode, growth in result["growth"].items():
        peak = max(c["peak_mb"] for c in result["cases"] if c["mode"] == mode)
        line = f"{mode}: peak {peak:.0f} MB ({'met' if peak <= TARGET_PEAK_MB else 'MISSED'}: <= {TARGET_PEAK_MB} MB)"
        if growth is not None:
            line += (f", growth from the smallest to the largest file {growth:+.1%}"
                     f" ({'met' if growth < TARGET_GROWTH else 'MISSED'}: < {TARGET_GROWTH:.0%})")
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--modes", default="dry,full", help="dry, full or both")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", choices=("dry", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.file, args.url, args.out)))
        return 0
    row_counts = [int(n) for n in args.rows.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    with tempfile.TemporaryDirectory() as folder:
        result = measure(row_counts, modes, Path(folder))
    show(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
