"""The proxy settings against a proxy people run: pproxy (from PyPI) in a process of its own,
forwarding to the sandbox, with and without credentials. Its verbose log names every
connection it forwards."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import customer_puts
from test_proxy import SECRET, _run


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PProxy:
    def __init__(self, log: Path, credentials: str = ""):
        pytest.importorskip("pproxy")
        self.port, self.log = _free_port(), log
        listen = f"http://127.0.0.1:{self.port}" + (f"#{credentials}" if credentials else "")
        # --auth 0: ask every connection for credentials (by default pproxy trusts an address
        # that authenticated once, for 30 days)
        self._process = subprocess.Popen([sys.executable, "-m", "pproxy", "-l", listen, "--auth", "0", "-v"],
                                         stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while "Serving on" not in log.read_text():
            assert time.monotonic() < deadline and self._process.poll() is None, log.read_text()
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def forwarded_to(self, port: int) -> int:
        return self.log.read_text().count(f"-> 127.0.0.1:{port}")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)


@pytest.fixture
def pproxy(tmp_path):
    started: list[PProxy] = []

    def start(credentials: str = "") -> PProxy:
        started.append(PProxy(tmp_path / f"pproxy-{len(started)}.log", credentials))
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


def test_requests_go_through_pproxy_and_no_proxy_bypasses_it(tmp_path, sandbox_server, pproxy):
    server, proxy = sandbox_server(), pproxy()
    sandbox_port = int(server.url.rsplit(":", 1)[1])
    result, summary = _run(tmp_path / "through", server.url, env={"HTTP_PROXY": proxy.url}, rows=5)
    assert result.exit_code == 0, result.output
    assert summary["success"] == 5 and proxy.forwarded_to(sandbox_port) >= 1
    seen = proxy.forwarded_to(sandbox_port)
    result, summary = _run(tmp_path / "direct", server.url, env={"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"},
                           rows=5)
    assert result.exit_code == 0 and summary["success"] == 5
    assert proxy.forwarded_to(sandbox_port) == seen, "NO_PROXY: not through the proxy"
    assert len(customer_puts(server)) == 10


def test_pproxy_with_credentials_and_a_wrong_password(tmp_path, sandbox_server, pproxy):
    server, proxy = sandbox_server(), pproxy(f"ops:{SECRET}")
    sandbox_port = int(server.url.rsplit(":", 1)[1])
    user_url = proxy.url.replace("http://", "http://ops@")
    result, summary = _run(tmp_path / "right", server.url, env={"BATCH_UPDATER_PROXY_PASSWORD": SECRET}, rows=4,
                           proxy=user_url)
    assert result.exit_code == 0, result.output
    assert summary["success"] == 4 and proxy.forwarded_to(sandbox_port) >= 1

    result, summary = _run(tmp_path / "wrong", server.url, env={"BATCH_UPDATER_PROXY_PASSWORD": "Wr0ng"}, rows=4,
                           proxy=user_url)
    assert result.exit_code == 3
    assert summary["reason"].startswith(f"the proxy {proxy.url.replace('http://', 'http://***@')} ([api] proxy)"
                                        " refused its credentials (HTTP 407")
    assert "Wr0ng" not in result.output and SECRET not in result.output
    assert len(customer_puts(server)) == 4
