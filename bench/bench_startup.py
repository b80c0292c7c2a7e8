"""Start-up: wall time of `batch-updater --help` and of a one-row dry run, as a user runs them.

    .venv/bin/python bench/bench_startup.py [--repeat 7] [--json PATH]

Each is a fresh process of the installed console script (next to this Python), timed from
spawn to exit; the median of --repeat runs is shown (after one untimed run that warms the
file cache). `python -X importtime -m batch_updater.cli --help` then lists the modules
that `--help` imports: pandas, pandera, numpy and aiohttp must not be among them.
Target (issue 6): `--help` <= 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_HELP_SECONDS = 0.3
HEAVY = ("pandas", "pandera", "numpy", "aiohttp", "yarl", "orjson", "sqlite3")


def console_script() -> list[str]:
    script = Path(sys.executable).parent / "batch-updater"
    return [str(script)] if script.exists() else [sys.executable, "-m", "batch_updater.cli"]


def timed(command: list[str], env: dict[str, str], repeat: int) -> list[float]:
    subprocess.run(command, env=env, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - began)
    return times


def heavy_imports(env: dict[str, str]) -> tuple[list[str], float]:
    """Top-level packages among HEAVY that `--help` imports, and the import time it reports."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "batch_updater.cli", "--help"],
                            env=env, capture_output=True, text=True, check=True)
    found, total = set(), 0
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if not match:
            continue
        module = match.group(4)
        if module.split(".")[0] in HEAVY:
            found.add(module.split(".")[0])
        if len(match.group(3)) == 1:  # a top-level import: its cumulative time counts once
            total += int(match.group(2))
    return sorted(found), total / 1e6


def measure(repeat: int) -> dict:
    env = dict(os.environ, BATCH_UPDATER_PASSWORD="startup-bench")
    command = console_script()
    help_times = timed(command + ["--help"], env, repeat)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "one.csv"
        source.write_text("identifierValue,firstName\n919800000001,Asha\n")
        dry_times = timed(command + ["run", str(source), "--dry-run", "--base-url", "http://127.0.0.1:9",
                                     "--username", "startup", "--output-dir", str(Path(folder) / "out")],
                          env, repeat)
    heavy, import_seconds = heavy_imports(env)
    return {"repeat": repeat, "help_seconds": statistics.median(help_times), "help_runs": help_times,
            "dry_run_seconds": statistics.median(dry_times), "dry_run_runs": dry_times,
            "help_heavy_imports": heavy, "help_import_seconds": import_seconds,
            "target_help_seconds": TARGET_HELP_SECONDS}


def show(r: dict) -> None:
    print(f"median of {r['repeat']} fresh processes")
    print(f"  batch-updater --help           {r['help_seconds']:.3f} s"
          f" ({'met' if r['help_seconds'] <= TARGET_HELP_SECONDS else 'MISSED'}: <= {TARGET_HELP_SECONDS} s)")
    print(f"  batch-updater run --dry-run    {r['dry_run_seconds']:.3f} s (one row: imports pandas and pandera)")
    heavy = ", ".join(r["help_heavy_imports"]) or "none of " + ", ".join(HEAVY)
    print(f"  --help imports {r['help_import_seconds']:.3f} s of modules; heavy ones: {heavy}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = measure(args.repeat)
    show(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
