"""Shared fixtures: a real sandbox on 127.0.0.1, configs pointing at it, CSV writers."""

from __future__ import annotations

import asyncio
import bisect
import csv
import random
import threading
import time
from pathlib import Path

import pytest

from batch_updater.config import load_config
from batch_updater.sandbox import SandboxSettings, SandboxThread
from batch_updater.send.ratelimit import RateLimiter

PASSWORD = SandboxSettings().password


@pytest.fixture
def sandbox_server():
    """A factory: sandbox_server(**settings) starts a SandboxThread, stopped after the test."""
    started: list[SandboxThread] = []

    def start(**settings) -> SandboxThread:
        server = SandboxThread(SandboxSettings(**settings)).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


def write_config(folder: Path, url: str, *, password: str | None = PASSWORD, **sections) -> Path:
    """A TOML config for the sandbox at `url`; `sections` override keys, e.g. limits={...}."""
    api = {"base_url": url, "username": SandboxSettings().till_code, "source": "INSTORE"}
    api.update(sections.pop("api", {}))
    if password is not None:
        (folder / "secret").write_text(password)
        api.setdefault("password_file", str(folder / "secret"))
    limits = {"rate_per_minute": 60_000, "concurrency": 8, "max_attempts": 3, "timeout_seconds": 5}
    limits.update(sections.pop("limits", {}))
    tables = {"api": api, "limits": limits, "output": {"dir": str(folder / "out")}, **sections}
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").isalnum() else f'"{key}"'


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_for(folder: Path, url: str, **sections):
    return load_config(write_config(folder, url, **sections), environ={})


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_report(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def mobile(i: int) -> str:
    """The mobile number of seeded sandbox customer i."""
    return f"9198{i:08d}"


def customer_puts(server) -> list:
    return [r for r in server.state.requests if r.method == "PUT"]


def wait_for_requests(server, count: int, timeout: float = 20.0) -> None:
    """Until the sandbox has seen `count` customer requests (a run in another process got going)."""
    deadline = time.monotonic() + timeout
    while len(customer_puts(server)) < count:
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.01)


# -- a clock for the rate limiter's deterministic tests (test_ratelimit, test_pacing) -----------

class FakeClock:
    """Time stands still until someone awaits ``sleep``, which jumps it forward.

    With ``late`` > 0 every sleep overshoots by up to that many seconds, like a busy loop.
    """

    def __init__(self, now: float = 1000.0, late: float = 0.0) -> None:
        self.now = now
        self.late = late
        self.rng = random.Random(0)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0) + self.rng.uniform(0.0, self.late)
        await asyncio.sleep(0)  # still yield, as a real sleep would


async def run_for(limiter: RateLimiter, clock: FakeClock, seconds: float) -> list[float]:
    """One caller that always waits: every start the limiter allows in `seconds`."""
    end, starts = clock.now + seconds, []
    while True:
        await limiter.acquire()
        if clock.now >= end:
            return starts
        starts.append(clock.now)


def max_in_window(starts: list[float], window: float) -> int:
    """The most starts in any half-open window [t, t + window)."""
    starts = sorted(starts)
    return max((bisect.bisect_left(starts, s + window) - i for i, s in enumerate(starts)), default=0)


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch):
    """The tests talk to servers on 127.0.0.1: a proxy set on the machine running them (a
    company's CI) must not stand in the way. Tests of proxies set their own."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class ServerThread:
    """A test server whose asyncio loop runs in a background thread, as a context manager.
    A subclass's `_serve()` starts listening, sets `url`, then awaits `_serving()`."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        raise NotImplementedError

    async def _serving(self) -> None:
        """Ready: wait here until the context ends."""
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await self._stop.wait()

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc_info) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
