"""Start the built-in sandbox in its own process (as the benchmarks need) and stop it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class SandboxUrl(str):
    """The sandbox's URL; `.pid` is its process (to read the server's CPU time)."""

    pid: int


@contextmanager
def sandbox_process(*options: str) -> Iterator[SandboxUrl]:
    """Yield the URL of `batch-updater sandbox --port 0 OPTIONS` running in a child process."""
    process = subprocess.Popen([sys.executable, "-m", "batch_updater.cli", "sandbox", "--port", "0", *options],
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"(http://[\d.]+:\d+)", line)
        if not match:
            raise RuntimeError(f"sandbox did not start: {line!r}")
        url = SandboxUrl(match.group(1))
        url.pid = process.pid
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc."""
    import os

    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
