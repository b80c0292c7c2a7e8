"""An input on S3 against the same file on local disk: a dry run of 1M rows and a full run of
150k rows against the sandbox.

    .venv/bin/python bench/bench_object_storage.py [--dry-rows 1000000] [--full-rows 150000] [--json PATH]

The S3 server is moto's (`moto_server`, in its own process on 127.0.0.1: an S3 protocol
server, not AWS's network), so the figures measure what streaming through the spool costs
this process (a background download thread, a reader following the spool, no row count),
not a real network. Each case runs `runner.run` in a fresh process; its peak RSS is that
process's own. The input is bench_validate.py's 14-column file (1% invalid rows). The dry
runs write their reports locally; the S3 full run's reports go to S3 too (uploaded at the
end: included in its time). The sandbox runs in
its own process (no rate limit, 64 workers, request log off).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import child as memory_child

BUCKET = "bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def child(mode: str, source: str, url: str, out: str) -> dict:
    """One run in this (fresh) process, as bench_memory measures it, with its rows/s."""
    figures = memory_child(mode, source, url, out)
    seconds = figures["seconds"]
    return {**figures, "seconds": round(seconds, 2), "rows_per_s": round(figures["rows"] / seconds)}


def run_case(mode: str, source: str, url: str, out: str, env: dict[str, str]) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--file", source, "--url", url, "--out", out]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} run of {source} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@contextmanager
def moto_process():
    """`moto_server` on a free port of 127.0.0.1; yields its endpoint URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure(dry_rows: int, full_rows: int, folder: Path) -> dict:
    import s3fs
    from bench_validate import write_file
    from sandbox_process import sandbox_process

    files = {}
    for rows in (dry_rows, full_rows):
        files[rows] = folder / f"customers-{rows}.csv"
        write_file(files[rows], rows)
    cases = []
    with moto_process() as endpoint:
        env = dict(os.environ, **CREDENTIALS, AWS_ENDPOINT_URL=endpoint, HOME=str(folder),  # the staging folder
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="bench", secret="bench")
        fs.mkdir(BUCKET)
        for path in files.values():
            fs.put_file(str(path), f"{BUCKET}/in/{path.name}")
        for mode, rows in (("dry", dry_rows), ("full", full_rows)):
            for where in ("local", "s3"):
                source = str(files[rows]) if where == "local" else f"s3://{BUCKET}/in/{files[rows].name}"
                # the dry run measures the input alone; the full run's reports go to S3 as well
                remote_out = where == "s3" and mode == "full"
                out = f"s3://{BUCKET}/out-{mode}" if remote_out else str(folder / f"out-{mode}-{where}")
                with sandbox_process("--no-record", "--customers", "1000") as url:
                    case = run_case(mode, source, url, out, env)
                cases.append({"where": where, **case})
                print(f"{mode:4} {where:5} {case['rows']:>9,} rows {case['seconds']:7.1f} s"
                      f" {case['rows_per_s']:>8,} rows/s {case['peak_mb']:6.1f} MB", flush=True)
    return {"cases": cases, "ratios": _ratios(cases)}


def _ratios(cases: list[dict]) -> dict:
    """S3's rows/s and peak over local's, per mode."""
    by = {(case["mode"], case["where"]): case for case in cases}
    return {mode: {"rows_per_s": round(by[mode, "s3"]["rows_per_s"] / by[mode, "local"]["rows_per_s"], 3),
                   "peak_mb": round(by[mode, "s3"]["peak_mb"] / by[mode, "local"]["peak_mb"], 3)}
            for mode in ("dry", "full")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dry-rows", type=int, default=1_000_000)
    parser.add_argument("--full-rows", type=int, default=150_000)
    parser.add_argument("--json")
    parser.add_argument("--child")
    parser.add_argument("--file")
    parser.add_argument("--url")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.file, args.url, args.out)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-object-storage-") as scratch:
        results = measure(args.dry_rows, args.full_rows, Path(scratch))
    for mode, ratio in results["ratios"].items():
        print(f"{mode}: s3 / local rows/s {ratio['rows_per_s']:.2f}, peak RSS {ratio['peak_mb']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
