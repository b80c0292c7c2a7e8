"""Job state in SQLite (the default) vs in PostgreSQL ([state] url): rows/s and peak RSS.

    .venv/bin/python bench/bench_pg_state.py [--rows 20000] [--latency-ms 0 50] [--repeat 2]
                                             [--state-url postgresql://user@host/db] [--json PATH]

Each run is the CLI (`batch-updater run --restart --json`) in a process of its own, against
the sandbox in another, so its peak RSS is its own (wait4). rows/s is the rows over the
summary's duration (the run from its start, interpreter start-up left out). Variants
alternate round by round, so machine noise hits both alike; the figure is the median, and
the ratio PostgreSQL / SQLite is the median of the rounds' ratios (two runs seconds apart:
steadier on a busy machine than a ratio of medians). Without --state-url (password from
BATCH_UPDATER_STATE_PASSWORD) a throwaway cluster is started as the tests start theirs
(tests/pg_cluster.py: Debian's binaries), on the same machine: the round trip is a local one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sandbox_process import sandbox_process

CONCURRENCY = 64


def make_input(folder: Path, rows: int) -> Path:
    path = folder / "customers.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identifierValue", "firstName", "lastName", "extendedFields.city"])
        for i in range(rows):
            writer.writerow([f"9198{i:08d}", f"First{i}", f"Last{i}", "Mysuru"])
    return path


def write_config(folder: Path, url: str, state_url: str | None) -> Path:
    lines = ["[api]", f'base_url = "{url}"', 'username = "demo.till"',
             "[limits]", "rate_per_minute = 1000000000", f"concurrency = {CONCURRENCY}",
             "[output]", f'dir = "{folder / "out"}"']
    if state_url:
        lines += ["[state]", f'url = "{state_url}"']
    path = folder / ("pg.toml" if state_url else "sqlite.toml")
    path.write_text("\n".join(lines) + "\n")
    return path


def one_run(source: Path, config: Path, environ: dict[str, str]) -> tuple[float, float]:
    """(rows/s, peak RSS in MiB) of one CLI run."""
    out = config.with_suffix(".json")
    with open(out, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "batch_updater.cli", "run", str(source), "--config",
                                    str(config), "--restart", "--json"], stdout=handle,
                                   stderr=subprocess.DEVNULL, env=environ)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    summary = json.loads(out.read_text())
    assert process.returncode == 0 and summary["success"] == summary["rows"], summary.get("reason")
    return summary["rows"] / summary["duration_seconds"], usage.ru_maxrss / 1024


def compare(source: Path, folder: Path, url: str, state_url: str, environ: dict[str, str],
            repeat: int) -> dict[str, dict[str, float]]:
    configs = {"sqlite": write_config(folder, url, None), "postgres": write_config(folder, url, state_url)}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    for _ in range(repeat):
        for name, config in configs.items():
            figures[name].append(one_run(source, config, environ))
    found: dict[str, dict[str, float]] = {
        name: {"rows_per_s": statistics.median(r for r, _ in runs), "peak_rss_mib": max(m for _, m in runs)}
        for name, runs in figures.items()}
    rounds = zip(figures["postgres"], figures["sqlite"])
    found["ratio"] = {"median_of_rounds": statistics.median(pg / lite for (pg, _), (lite, _) in rounds)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--state-url")
    parser.add_argument("--json")
    args = parser.parse_args()
    environ = {**os.environ, "BATCH_UPDATER_PASSWORD": "demo-password"}
    cluster = None
    state_url = args.state_url
    if not state_url:
        from pg_cluster import PASSWORD, start_cluster

        cluster = start_cluster()
        state_url = cluster.new_database()
        environ["BATCH_UPDATER_STATE_PASSWORD"] = PASSWORD
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            environ["XDG_STATE_HOME"] = str(folder / "host")
            source = make_input(folder, args.rows)
            for latency in args.latency_ms:
                with sandbox_process("--latency-ms", str(latency), "--no-record",
                                     "--customers", str(args.rows)) as url:
                    found = compare(source, folder, url, state_url, environ, args.repeat)
                ratio = found["ratio"]["median_of_rounds"]
                results[f"{latency:g} ms"] = found
                print(f"{args.rows:,} rows, {latency:g} ms latency, concurrency {CONCURRENCY}:"
                      f" SQLite {found['sqlite']['rows_per_s']:,.0f} rows/s"
                      f" (peak RSS {found['sqlite']['peak_rss_mib']:.0f} MiB),"
                      f" PostgreSQL {found['postgres']['rows_per_s']:,.0f} rows/s"
                      f" (peak RSS {found['postgres']['peak_rss_mib']:.0f} MiB); ratio {ratio:.2f}", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
