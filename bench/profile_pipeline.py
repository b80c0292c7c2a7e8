"""Where the time of a full run goes: one run of the whole pipeline, sampled by py-spy.

    .venv/bin/python bench/profile_pipeline.py [--rows 50000] [--latency-ms 0] [--top 25]
                                               [--raw PATH]

A child process runs `runner.run` on a CSV of --rows rows against the sandbox (in its own
process, no rate limit, 64 workers), after an untimed warm-up. py-spy (`pip install
py-spy`) samples the child, every thread, 250 times a second (without pausing it), for the
measured run only;
without py-spy, cProfile profiles the child's main thread instead (it slows Python code
down several times, so its shares are rougher).

Each sample of the event loop's thread is put in one bucket: the report phase and the
SQLite group commits (journal and state store) by what is on the stack, the rest by the
innermost frame (aiohttp and yarl: the HTTP client; asyncio: the loop and its sockets; a
batch_updater module: our own code and the C calls it makes, orjson and os.write among
them). Samples of the thread that validates and maps chunks have their own buckets.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONCURRENCY = 64


def child(rows: int, latency_ms: float, folder: str) -> None:
    """The profiled process: warm up, say ready, wait for 'go' on stdin, run, report."""
    from bench_throughput import make_input, pipeline_config
    from sandbox_process import sandbox_process

    from batch_updater.runner import run

    with sandbox_process("--customers", str(rows), "--no-record", "--latency-ms", str(latency_ms)) as url:
        source = make_input(Path(folder), rows)
        config = pipeline_config(url, Path(folder))
        run(config, source, dry_run=True)  # imports, file cache
        print("ready", flush=True)
        sys.stdin.readline()
        profile = os.environ.get("PROFILE_CPROFILE")
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        began = time.perf_counter()
        summary = run(config, source, restart=True)
        seconds = time.perf_counter() - began
        if profile:
            profiler.disable()
            profiler.dump_stats(profile)
    print(json.dumps({"rows": summary.rows, "success": summary.success, "seconds": seconds}), flush=True)


def bucket(frames: list[str]) -> str:
    """One sample's bucket (frames outermost first, as py-spy writes them)."""
    stack = ";".join(frames)
    if "write_reports" in stack:
        return "reports (re-read the input, join the journal, write CSVs)"
    if re.search(r"\bflush \(batch_updater/(journal|changes)\.py", stack) or "Journal.flush" in stack \
            or "SyncState.flush" in stack:
        return "SQLite group commits: " + ("state store" if "changes.py" in stack else "journal")
    if "_finish" in stack or "_replay" in stack:
        return "summary and end of run"
    leaf = frames[-1]
    if re.search(r"\b(open_input|resolve_headers|screen_input|open_job|job_identity)\b", stack) \
            or re.search(r"(SyncState|Journal)\.__init__", stack):
        return "start-up (open input, job, state store; before the event loop)"
    if re.search(r"[(/](aiohttp|yarl|multidict|propcache|aiohappyeyeballs)/", leaf):
        return "aiohttp + yarl (the HTTP client itself)"
    if "selectors.py" in leaf:
        return "event loop idle (waiting for the server)"
    if re.search(r"[(/]asyncio/", leaf) or "socket" in leaf:
        return "asyncio loop, tasks, socket send/recv"
    match = re.search(r"batch_updater/(\w+)\.py", leaf)
    if match:
        return f"ours: {match.group(1)}.py"
    return "other: " + re.sub(r" \(.*", "", leaf)


def thread_bucket(frames: list[str]) -> str | None:
    leaf = frames[-1] if frames else ""
    if re.search(r"concurrent/futures/thread\.py|threading\.py", leaf):
        return None  # an idle pool thread waiting for work
    match = re.search(r"[(/](pandas|pandera|numpy)/", ";".join(frames))
    owner = re.search(r"batch_updater/(\w+)\.py", leaf)
    if owner:
        return f"preparing thread: ours ({owner.group(1)}.py)"
    if match:
        return f"preparing thread: {match.group(1)}"
    return "preparing thread: other"


def aggregate(raw: Path) -> tuple[collections.Counter, int]:
    counts: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        if not frames:  # caught between frames (sampling without pausing)
            continue
        if "MainThread" in thread:
            name = bucket(frames)
        else:
            name = thread_bucket(frames)
            if name is None:
                continue
        counts[name] += int(number)
        total += int(number)
    return counts, total


def cprofile_buckets(path: Path) -> tuple[collections.Counter, int]:
    import pstats

    stats = pstats.Stats(str(path)).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    counts: collections.Counter = collections.Counter()
    for (filename, _, name), (_, _, tottime, _, _) in stats.items():
        frame = f"{name} ({filename})"
        counts[bucket(["asyncio/runners.py", frame])] += tottime
    return counts, sum(counts.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--raw", help="keep py-spy's raw samples in this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.rows, args.latency_ms, args.folder)
        return 0
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(args.raw or Path(folder) / "samples.raw")
        stats_path = Path(folder) / "profile.pstats"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        if not py_spy:
            env["PROFILE_CPROFILE"] = str(stats_path)
        process = subprocess.Popen([sys.executable, __file__, "--child", "--rows", str(args.rows),
                                    "--latency-ms", str(args.latency_ms), "--folder", folder],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert process.stdout.readline().strip() == "ready"
        spy = None
        if py_spy:
            spy = subprocess.Popen([py_spy, "record", "--pid", str(process.pid), "--rate", "250", "--threads",
                                    "--nonblocking",
                                    "--format", "raw", "--output", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # let it attach
        process.stdin.write("go\n")
        process.stdin.flush()
        result = json.loads(process.stdout.readline())
        process.wait()
        if spy:
            spy.wait(timeout=30)
            counts, total = aggregate(raw)
            how = f"py-spy, {total} samples at 250/s (every thread)"
        else:
            counts, total = cprofile_buckets(stats_path)
            how = "cProfile (main thread only; py-spy not installed)"
    print(f"one full run: {result['rows']:,} rows in {result['seconds']:.2f} s"
          f" ({result['rows'] / result['seconds']:,.0f} rows/s, profiled), latency {args.latency_ms:g} ms; {how}")
    for name, count in counts.most_common(args.top):
        print(f"  {count / total:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
