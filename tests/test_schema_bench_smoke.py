"""The validate+map benchmark runs and prints its figures (on 10,000 rows: a smoke test, not a timing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_validate.py"



pytestmark = pytest.mark.slow  # runs the benchmark scripts

def test_bench_validate_prints_rates_and_peak_memory(tmp_path):
    result = subprocess.run([sys.executable, str(BENCH), "--rows", "10000", "--repeat", "1",
                             "--file", str(tmp_path / "bench.csv")],
                            capture_output=True, text=True, timeout=120, check=True)
    lines = result.stdout.splitlines()
    assert lines[0] == "bench.csv: 10,000 rows, 1 MB, median of 1"
    assert re.fullmatch(r"  baseline: chunked pandas read +[\d,]+ rows/s +\d+ MB peak RSS", lines[1])
    assert re.fullmatch(r"  validate\+map \(prepare_chunks\) +[\d,]+ rows/s +\d+ MB peak RSS", lines[2])
    assert lines[4].startswith("  target >= 150,000 rows/s: ")
