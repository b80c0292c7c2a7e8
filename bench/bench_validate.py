"""Validate + map throughput and peak memory on a large CSV, against a plain pandas read.

    .venv/bin/python bench/bench_validate.py [--rows 1000000] [--repeat 3] [--file PATH]
                                             [--invalid-every 100] [--json PATH]

Writes a CSV shaped like samples/customers.csv (14 columns: identifier, names, loyalty
type, an email channel with its flags, a custom field, an extended field, an external
id on 20% of rows, an enrolment with an expiry date on 25%; 1% of rows invalid, so every
chunk takes pandera's slower path for failures; --invalid-every 0 for a clean file), then
times, each in a fresh process so that peak RSS (resource.getrusage) is its own:

- baseline: pandas' chunked C-parser read of the same file, every cell as text (for a
  workbook given with --file: python-calamine's rows, as they come);
- validate+map: the product's path, open_input -> resolve_headers -> prepare_chunks,
  consumed as the runner consumes it (every payload and outcome taken, then dropped).
  Imports (pandas, pandera: about a second, once per process) are outside the timing;
  building the schema and the mapper for the file's header is inside.

Prints the median of --repeat runs, the ratio of the two, and the issue's targets
(>= 150,000 rows/s and <= 300 MB peak for validate+map on a million rows). The machine
is noisy (±5%): compare ratios within one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_ROWS_PER_SECOND = 150_000
TARGET_PEAK_MB = 300
HEADER = [
    "identifierValue", "firstName", "lastName", "loyaltyType", "commChannels.email.value",
    "commChannels.email.primary", "commChannels.email.verified", "fields.preferred_language",
    "extendedFields.city", "identifiers.externalId", "loyaltyProgramEnrollments.programId",
    "loyaltyProgramEnrollments.tierNumber", "loyaltyProgramEnrollments.loyaltyPoints",
    "loyaltyProgramEnrollments.tierExpiryDate",
]
CITIES = ("Bengaluru", "Chennai", "Pune", "Kochi", "Delhi", "Mysuru")
FIRST = ("Asha", "Ravi", "Meera", "Arjun", "Divya", "Kiran", "Lakshmi", "Vikram", "Priya")


def write_file(path: Path, rows: int, invalid_every: int = 100) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            enrolled = i % 4 == 0
            writer.writerow([
                f"9198{i:08d}", FIRST[i % len(FIRST)], "Rao" if i % 2 else "Iyer", "loyalty",
                f"customer{i}@example.com" if invalid_every == 0 or i % invalid_every else f"customer{i}@",
                "true",
                "yes" if i % 3 else "no", "kn" if i % 2 else "en", CITIES[i % len(CITIES)],
                f"EXT{i:08d}" if i % 5 == 0 else "",
                "699" if enrolled else "", "2" if enrolled else "",
                str(i % 1000) if enrolled else "",
                "2027-12-31T23:59:59+05:30" if enrolled else "",
            ])


def measure(phase: str, path: str) -> dict:
    """One phase in this (fresh) process: seconds, rows, peak RSS."""
    if phase == "baseline" and Path(path).suffix.lower() in (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods"):
        from python_calamine import CalamineWorkbook

        started = time.perf_counter()
        sheet = CalamineWorkbook.from_path(path).get_sheet_by_index(0)
        rows = sum(1 for _ in sheet.iter_rows()) - 1
        seconds = time.perf_counter() - started
    elif phase == "baseline":
        import pandas as pd

        started = time.perf_counter()
        rows = 0
        for frame in pd.read_csv(path, dtype=object, header=None, skiprows=1, names=list(range(len(HEADER))),
                                 keep_default_na=False, na_filter=False, chunksize=10_000,
                                 engine="c", index_col=False, skip_blank_lines=False):
            rows += len(frame)
        seconds = time.perf_counter() - started
    else:
        from batch_updater.config import load_config
        from batch_updater.input.columns import resolve_headers
        from batch_updater.input.reader import open_input
        from batch_updater.rows.prepare import prepare_chunks
        importlib.import_module("batch_updater.rows.schema")  # once per process (~0.6 s), not per row

        config = load_config(None, overrides={"api.base_url": "http://127.0.0.1:9", "api.username": "bench"},
                             environ={"BATCH_UPDATER_PASSWORD": "unused"})
        started = time.perf_counter()
        source = open_input(path, config.input)
        plan = resolve_headers(source.headers, dict(config.columns), str(source.path))
        rows = payloads = 0
        for prepared in prepare_chunks(source, plan, config):
            payloads += len(prepared.payloads)
            rows += len(prepared.payloads) + len(prepared.outcomes)
        seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"phase": phase, "rows": rows, "seconds": seconds, "peak_mb": round(peak_mb, 1)}


def in_child(script: str, *args: str) -> dict:
    """Run `script` in a fresh interpreter (so each phase has its own peak RSS) and read the
    JSON line it prints last."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_phase(phase: str, path: Path) -> dict:
    return in_child(__file__, "--phase", phase, "--file", str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--file", help="use (or, with --rows, create) this CSV")
    parser.add_argument("--invalid-every", type=int, default=100,
                        help="one row in N has a bad email (default 100: 1%%; 0: none)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--phase", choices=("baseline", "validate"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(measure(args.phase, args.file)))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.file) if args.file else Path(folder) / "bench.csv"
        if not path.exists():
            write_file(path, args.rows, args.invalid_every)
        size_mb = path.stat().st_size / 1e6
        results: dict[str, list[dict]] = {"baseline": [], "validate": []}
        for _ in range(args.repeat):
            for phase in results:
                results[phase].append(run_phase(phase, path))
        rows = results["validate"][0]["rows"]
        print(f"{path.name}: {rows:,} rows, {size_mb:.0f} MB, median of {args.repeat}")
        figures = {}
        plain = "calamine rows" if path.suffix.lower() != ".csv" else "chunked pandas read"
        for phase, label in (("baseline", f"baseline: {plain}"),
                             ("validate", "validate+map (prepare_chunks)")):
            rate = statistics.median(r["rows"] / r["seconds"] for r in results[phase])
            peak = statistics.median(r["peak_mb"] for r in results[phase])
            figures[phase] = (rate, peak)
            print(f"  {label:32} {rate:>12,.0f} rows/s {peak:>8.0f} MB peak RSS")
        rate, peak = figures["validate"]
        print(f"  validate+map takes {figures['baseline'][0] / rate:.1f}x the time of the plain read")
        print(f"  target >= {TARGET_ROWS_PER_SECOND:,} rows/s: {'met' if rate >= TARGET_ROWS_PER_SECOND else 'MISSED'};"
              f" target <= {TARGET_PEAK_MB} MB: {'met' if peak <= TARGET_PEAK_MB else 'MISSED'}")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "rows": rows, "repeat": args.repeat, "file_mb": size_mb,
                **{f"{phase}_rows_per_s": rate for phase, (rate, _) in figures.items()},
                **{f"{phase}_peak_mb": peak for phase, (_, peak) in figures.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
