"""A run's own SIGINT/SIGTERM handlers last only as long as the run: the host's come back.

An Airflow task installs a SIGTERM handler to kill its work; a run inside the task stops
cleanly on SIGTERM while it sends, and afterwards the task's handler must be in place again.
"""

from __future__ import annotations

import signal

from conftest import config_for, mobile, write_csv

from batch_updater import run


def test_the_handlers_in_place_before_a_run_are_in_place_after_it(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], [[mobile(1), "A"]])
    seen: list[int] = []

    def hosts_handler(signum, frame) -> None:
        seen.append(signum)

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, hosts_handler)
        signal.signal(signal.SIGINT, hosts_handler)
        summary = run(config_for(tmp_path, server.url), source)
        assert summary.exit_code == 0 and summary.requests == 1
        assert signal.getsignal(signal.SIGTERM) is hosts_handler
        assert signal.getsignal(signal.SIGINT) is hosts_handler
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
