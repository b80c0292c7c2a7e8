"""The benchmarks still run: `bench/run_all.py --quick`, every step on tiny inputs (~15 s).

A smoke test, not a timing: the figures of a few hundred rows mean nothing and no target is
checked. The full run is `.venv/bin/python bench/run_all.py` (see bench/RESULTS.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parent.parent / "bench" / "run_all.py"
STEPS = ["throughput-0ms", "throughput-50ms", "overhead", "pacing", "memory", "startup", "validate"]



pytestmark = pytest.mark.slow  # runs the benchmark scripts

def test_every_benchmark_runs_on_tiny_inputs_and_lands_in_one_table(tmp_path):
    figures_path = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(RUN_ALL), "--quick", "--json", str(figures_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    saved = json.loads(figures_path.read_text())
    assert saved["failed"] == [] and list(saved["figures"]) == STEPS
    throughput = saved["figures"]["throughput-0ms"]
    assert throughput["bare_rows_per_s"] > 0 and throughput["ours_rows_per_s"] > 0
    assert set(throughput["variants"]) == {"full pipeline", "journal writes off", "state store off", "reports off"}
    assert saved["figures"]["throughput-50ms"]["ceiling_rows_per_s"] == 1280
    assert saved["figures"]["overhead"]["overhead_us_per_row"] > 0
    assert len(saved["figures"]["pacing"]["results"]) == 2  # ours and the baseline pacer
    pacing = saved["figures"]["pacing"]["results"][0]
    assert pacing["requests"] >= pacing["rows"] and pacing["span_windows"] > 4
    memory = saved["figures"]["memory"]
    assert [(c["mode"], c["input_rows"]) for c in memory["cases"]] == [
        ("dry", 200), ("dry", 400), ("full", 200), ("full", 400)]
    assert all(c["peak_mb"] > 0 for c in memory["cases"])
    assert saved["figures"]["startup"]["help_seconds"] > 0
    table = result.stdout[result.stdout.index("batch-updater benchmarks"):]
    for figure in ("full pipeline / bare loop", "our CPU per row over a fake transport",
                   "full pipeline / (concurrency / latency = 1,280)",
                   "pacing (10 per 0.3 s rolling window", "peak RSS, full run, 400 rows",
                   "batch-updater --help (median, fresh process)", "validate + map, 2,000 rows"):
        assert figure in table


def test_the_only_changed_benchmark_runs_on_a_tiny_file():
    script = RUN_ALL.parent / "bench_only_changed.py"
    result = subprocess.run([sys.executable, str(script), "--rows", "2000"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2. same file, --only-changed (all unchanged)" in result.stdout
    assert "unchanged path" in result.stdout and "5. floor: reading the file alone" in result.stdout


def test_the_object_storage_benchmark_runs_on_tiny_files(tmp_path):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    script = RUN_ALL.parent / "bench_object_storage.py"
    figures = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(script), "--dry-rows", "2000", "--full-rows", "300",
                             "--json", str(figures)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = json.loads(figures.read_text())["cases"]
    assert {(case["mode"], case["where"]) for case in cases} == {(m, w) for m in ("dry", "full")
                                                                 for w in ("local", "s3")}
    assert all(case["exit_code"] in (0, 1) for case in cases)
