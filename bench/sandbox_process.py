"""Start the built-in sandbox in its own process (as the benchmarks need) and stop it."""

from __future__ import annotations

import re
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def sandbox_process(*options: str) -> Iterator[str]:
    """Yield the URL of `batch-updater sandbox --port 0 OPTIONS` running in a child process."""
    process = subprocess.Popen([sys.executable, "-m", "batch_updater.cli", "sandbox", "--port", "0", *options],
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"(http://[\d.]+:\d+)", line)
        if not match:
            raise RuntimeError(f"sandbox did not start: {line!r}")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)
