"""Every benchmark of batch-updater, and one table of the figures against issue 6's targets.

    .venv/bin/python bench/run_all.py [--quick] [--details] [--json PATH] [--only STEP,...]

Steps (each script also runs on its own; see its docstring):

  throughput-0ms   bench_throughput.py: 20,000 rows, no latency, 3 interleaved rounds of the
                   bare aiohttp loop and our pipeline (whole, and with the journal's writes,
                   the state store or the reports switched off), then the requests loop (3,000 rows)
  throughput-50ms  bench_throughput.py: 10,000 rows, 50 ms latency, 3 rounds; requests loop 100 rows
  overhead         bench_overhead.py: our CPU per row over a fake transport (steadier than rows/s)
  pacing           bench_pacing.py: a strict 100-per-3-s rolling window, 5 windows, and a baseline
  memory           bench_memory.py: peak RSS of 100k and 1M rows, dry run and full run (~4 min)
  startup          bench_startup.py: `--help` and a one-row dry run, median of 7
  validate         bench_validate.py: validate + map, 1M rows, once

About 7-8 minutes on 2 cores. --quick runs every step on tiny inputs (a smoke test: the
figures mean nothing). Needs `requests` in the venv for the requests loop (skipped without
it) and `py-spy` only for bench/profile_pipeline.py, which this does not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = {
    "throughput-0ms": ["bench_throughput.py", "--rows", "20000", "--repeat", "3", "--requests-rows", "3000",
                       "--diagnose"],
    "throughput-50ms": ["bench_throughput.py", "--rows", "10000", "--latency-ms", "50", "--repeat", "3",
                        "--requests-rows", "100"],
    "overhead": ["bench_overhead.py", "--rows", "50000", "--repeat", "3"],
    "pacing": ["bench_pacing.py"],
    "memory": ["bench_memory.py", "--rows", "100000,1000000"],
    "startup": ["bench_startup.py", "--repeat", "7"],
    "validate": ["bench_validate.py", "--rows", "1000000", "--repeat", "1"],
}
QUICK = {
    "throughput-0ms": ["bench_throughput.py", "--rows", "300", "--repeat", "1", "--requests-rows", "30",
                       "--diagnose"],
    "throughput-50ms": ["bench_throughput.py", "--rows", "200", "--latency-ms", "50", "--repeat", "1",
                        "--requests-rows", "3"],
    "overhead": ["bench_overhead.py", "--rows", "300", "--repeat", "1"],
    "pacing": ["bench_pacing.py", "--limit", "10", "--window", "0.3", "--windows", "5"],
    "memory": ["bench_memory.py", "--rows", "200,400"],
    "startup": ["bench_startup.py", "--repeat", "1"],
    "validate": ["bench_validate.py", "--rows", "2000", "--repeat", "1"],
}


def run_step(name: str, command: list[str], folder: Path, details: bool) -> tuple[dict | None, str, float]:
    out = folder / f"{name}.json"
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    began = time.perf_counter()
    result = subprocess.run([sys.executable, str(HERE / command[0]), *command[1:], "--json", str(out)],
                            capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - began
    text = result.stdout + (result.stderr if result.returncode else "")
    if details or result.returncode:
        print(f"== {name} ({seconds:.0f} s) ==\n{text.rstrip()}\n", flush=True)
    if result.returncode or not out.exists():
        return None, text, seconds
    return json.loads(out.read_text()), text, seconds


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "NOT MET")


def table(figures: dict) -> list[tuple[str, str, str, str]]:
    """Rows of (figure, value, target, verdict)."""
    rows: list[tuple[str, str, str, str]] = []
    for key, latency in (("throughput-0ms", 0), ("throughput-50ms", 50)):
        t = figures.get(key)
        if not t:
            continue
        where = f"{t['rows']:,} rows, {latency} ms, {t['concurrency']} workers"
        rows.append((f"bare aiohttp loop ({where})", f"{t['bare_rows_per_s']:,.0f} rows/s", "", ""))
        rows.append(("batch-updater full pipeline", f"{t['ours_rows_per_s']:,.0f} rows/s", "", ""))
        if latency == 0:
            rows.append(("  full pipeline / bare loop", f"{t['ours_vs_bare']:.2f}", ">= 0.80",
                         verdict(t["ours_vs_bare"] >= 0.80)))
            for name, v in t["variants"].items():
                if name != "full pipeline":
                    rows.append((f"  (diagnosis) pipeline, {name} / bare", f"{v['vs_bare']:.2f}", "", ""))
        else:
            rows.append(("  full pipeline / bare loop", f"{t['ours_vs_bare']:.2f}", "", ""))
            rows.append((f"  full pipeline / (concurrency / latency = {t['ceiling_rows_per_s']:,.0f})",
                         f"{t['ours_vs_ceiling']:.1%}", ">= 90%", verdict(t["ours_vs_ceiling"] >= 0.90)))
            rows.append(("  bare loop / (concurrency / latency)", f"{t['bare_vs_ceiling']:.1%}", "", ""))
        if t["requests_rows_per_s"]:
            rows.append((f"pandas.iterrows + requests ({t['requests_rows']:,} rows)",
                         f"{t['requests_rows_per_s']:,.0f} rows/s", "", ""))
            rows.append(("  full pipeline / requests loop", f"{t['ours_vs_requests']:.1f}x", ">= 5x",
                         verdict(t["ours_vs_requests"] >= 5)))
        else:
            rows.append(("pandas.iterrows + requests", "skipped: requests not installed", ">= 5x", "-"))
    o = figures.get("overhead")
    if o:
        us = o["us_per_row"]
        rows.append((f"our CPU per row over a fake transport ({o['rows']:,} rows; diagnosis)",
                     f"{o['overhead_us_per_row']:.1f} us/row", "", ""))
        for name, value in us.items():
            if name not in ("floor", "full pipeline"):
                rows.append((f"  {name}", f"{value - us['floor']:.1f} us/row", "", ""))
    p = figures.get("pacing")
    if p:
        ours = p["results"][0]
        window = f"{p['limit']} per {p['window_seconds']:g} s rolling window, {ours['span_windows']:.1f} windows"
        rows.append((f"pacing ({window})", f"{ours['share_server']:.2%} of the limit", ">= 99%",
                     verdict(ours["share_server"] >= 0.99)))
        rows.append(("  429 answers", str(ours["throttled"]), "0", verdict(ours["throttled"] == 0)))
        rows.append(("  most starts in any rolling window", f"{ours['max_window']} / {p['limit']}", "<= limit",
                     verdict(ours["max_window"] <= p["limit"])))
        for base in p["results"][1:]:
            rows.append((f"  {base['name']}", f"{base['share_server']:.2%}, {base['throttled']} x 429,"
                         f" max {base['max_window']} / {p['limit']}", "", ""))
    m = figures.get("memory")
    if m:
        for c in m["cases"]:
            rows.append((f"peak RSS, {c['mode']} run, {c['input_rows']:,} rows",
                         f"{c['peak_mb']:.0f} MB ({c['input_rows'] / c['seconds']:,.0f} rows/s)", "<= 300 MB",
                         verdict(c["peak_mb"] <= 300)))
        for mode, growth in m["growth"].items():
            if growth is not None:
                rows.append((f"  {mode} run: growth from the smaller to the larger file", f"{growth:+.1%}",
                             "< 20%", verdict(growth < 0.20)))
    s = figures.get("startup")
    if s:
        rows.append(("batch-updater --help (median, fresh process)", f"{s['help_seconds']:.3f} s", "<= 0.3 s",
                     verdict(s["help_seconds"] <= 0.3)))
        rows.append(("  heavy modules imported by --help", ", ".join(s["help_heavy_imports"]) or "none",
                     "none", verdict(not s["help_heavy_imports"])))
        rows.append(("one-row dry run (median, fresh process)", f"{s['dry_run_seconds']:.3f} s", "", ""))
    v = figures.get("validate")
    if v:
        rows.append((f"validate + map, {v['rows']:,} rows (issue 3)",
                     f"{v['validate_rows_per_s']:,.0f} rows/s, {v['validate_peak_mb']:.0f} MB", ">= 150,000 rows/s",
                     verdict(v["validate_rows_per_s"] >= 150_000)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs: checks that every step runs")
    parser.add_argument("--details", action="store_true", help="print each benchmark's own output too")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--only", help="comma-separated steps (default: all)")
    args = parser.parse_args()
    steps = QUICK if args.quick else FULL
    chosen = args.only.split(",") if args.only else list(steps)
    unknown = set(chosen) - set(steps)
    if unknown:
        parser.error(f"unknown step(s): {', '.join(sorted(unknown))}; steps: {', '.join(steps)}")
    started = datetime.now(UTC)
    began = time.perf_counter()
    figures: dict = {}
    failed = []
    with tempfile.TemporaryDirectory() as folder:
        for name in chosen:
            print(f"running {name} ...", flush=True)
            result, _, seconds = run_step(name, steps[name], Path(folder), args.details)
            if result is None:
                failed.append(name)
                print(f"  {name} FAILED after {seconds:.0f} s", flush=True)
            else:
                figures[name] = result
                print(f"  {name} done in {seconds:.0f} s", flush=True)
    elapsed = time.perf_counter() - began
    machine = (f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
               f" {platform.machine()}")
    print(f"\nbatch-updater benchmarks, {started:%Y-%m-%d %H:%M} UTC; {machine};"
          f" {'QUICK (tiny inputs) ' if args.quick else ''}{elapsed / 60:.1f} min")
    rows = table(figures)
    widths = [max(len(r[i]) for r in rows + [("figure", "value", "target", "")]) for i in range(4)]
    print(f"{'figure':{widths[0]}}  {'value':>{widths[1]}}  {'target':{widths[2]}}  verdict")
    for figure, value, target, mark in rows:
        print(f"{figure:{widths[0]}}  {value:>{widths[1]}}  {target:{widths[2]}}  {mark}")
    if failed:
        print(f"failed steps: {', '.join(failed)} (run with --details to see their output)")
    if args.json:
        Path(args.json).write_text(json.dumps({"started": started.isoformat(timespec="seconds"),
                                               "machine": machine, "quick": args.quick,
                                               "minutes": elapsed / 60, "figures": figures,
                                               "table": rows, "failed": failed}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
