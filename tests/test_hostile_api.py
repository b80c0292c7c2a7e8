"""Surviving a hostile API: 5xx gateway pages, dropped connections, 429 bursts, 521 busy
customers, slow answers, short-lived OAuth tokens, refused credentials, an API that is down.

Whole runs against a real server over HTTP; the assertions read the reports, summary.json
and what the server recorded. A tiny purpose-built server (MiniApi) plays the answers the
sandbox does not give: 403 pages and a Retry-After in HTTP-date form.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner
from conftest import config_for, customer_puts, mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.config import load_config
from batch_updater.outcomes import Stage, Status
from batch_updater.rows.payload import Lookup, Payload
from batch_updater.runner import run
from batch_updater.sandbox import Faults, RateLimit, Sandbox, SandboxSettings
from batch_updater.send.backoff import backoff_delay
from batch_updater.send.client import ApiClient
from batch_updater.send.pool import WorkerPool
from batch_updater.send.ratelimit import RateLimiter

FAST_BACKOFF = {"backoff_base_seconds": 0.02, "backoff_cap_seconds": 0.5}


def report_rows(summary) -> Counter:
    """How many times each input row appears across the three reports."""
    rows: Counter = Counter()
    for kind in ("success", "errors", "skipped"):
        rows.update(int(r["_row"]) for r in read_report(summary.reports[kind]))
    return rows


def by_row(puts) -> dict[tuple, list]:
    """The server's records grouped per input row (each row's payload is unique), in arrival order."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in sorted(puts, key=lambda r: r.started):
        groups[r.query["identifierName"], r.query["identifierValue"], r.body["profiles"][0]["firstName"]].append(r)
    return groups


def received_ok(record) -> bool:
    """A 200 that reached the client (a slow answer arrives after the client gave up)."""
    return record.status == 200 and record.outcome == "ok"


def assert_nothing_resent_after_a_200(groups: dict[tuple, list]) -> None:
    for row, records in groups.items():
        answered = [i for i, r in enumerate(records) if received_ok(r)]
        assert answered == [len(records) - 1], (row, [(r.status, r.outcome) for r in records])


# --- The hostile mix ----------------------------------------------------------------------

def hostile_input(path: Path) -> tuple[Path, int]:
    """Every 8th customer appears three times: again by mobile (same customer key: the pool
    serialises them) and by email right after (another key for the same customer, so the two
    run together and the sandbox answers 521). Every row's firstName is unique to the row."""
    rows = []
    for i in range(160):
        rows.append([mobile(i), "mobile"])
        if i % 8 == 0:
            rows.append([f"customer{i}@example.com", "email"])
            rows.append([mobile(i), "mobile"])
    rows = [[value, name, f"R{n + 2}"] for n, (value, name) in enumerate(rows)]
    return write_csv(path, ["identifierValue", "identifierName", "firstName"], rows), len(rows)


def test_hostile_api_every_row_in_one_report_and_nothing_resent_after_a_200(tmp_path, sandbox_server):
    faults = Faults(error_500=0.025, error_502=0.025, error_503=0.025, error_504=0.025,
                    drop_before=0.015, drop_after=0.015, burst_429=0.02)
    server = sandbox_server(faults=faults, processing_seconds=0.02, seed=4)
    source, rows = hostile_input(tmp_path / "in.csv")
    config = config_for(tmp_path, server.url, limits={
        "rate_per_minute": 200, "window_seconds": 1.0, "window_margin_seconds": 0.01,
        "concurrency": 8, "max_attempts": 8, **FAST_BACKOFF})
    summary = run(config, source)

    assert report_rows(summary) == Counter(range(2, rows + 2))  # every row in exactly one report
    assert (summary.exit_code, summary.success, summary.rows) == (0, rows, rows)
    puts = customer_puts(server)
    statuses = Counter(r.status for r in puts)
    outcomes = Counter(r.outcome for r in puts)
    # Every fault was met, and retried through.
    assert {500, 502, 503, 504, 429, 521, 0} <= set(statuses)
    assert outcomes["drop_before"] and outcomes["drop_after"] and outcomes["burst_429"]
    groups = by_row(puts)
    assert len(groups) == rows
    assert_nothing_resent_after_a_200(groups)
    # The client's counts agree with what the server saw.
    assert summary.requests == len(puts)
    assert summary.http_statuses == {str(s): n for s, n in sorted(statuses.items())}
    assert summary.throttled == statuses[429]
    assert summary.retries == len(puts) - rows
    # Dropped connections leave their rows in doubt, and summary.json says how many.
    dropped_rows = sum(any(r.status == 0 for r in records) for records in groups.values())
    written = json.loads(Path(summary.reports["summary"]).read_text())
    assert (written["in_doubt"], written["in_doubt_requests"]) == (dropped_rows, statuses[0])
    assert dropped_rows > 0


def test_slow_answers_time_out_in_doubt_and_are_counted(tmp_path, sandbox_server):
    server = sandbox_server(faults=Faults(slow=0.15, slow_seconds=0.4), seed=3)
    rows = 40
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"],
                       [[mobile(i), f"R{i + 2}"] for i in range(rows)])
    config = config_for(tmp_path, server.url, api={"identifier_name": "mobile"}, limits={
        "concurrency": 4, "max_attempts": 10, "read_timeout_seconds": 0.1, **FAST_BACKOFF})
    summary = run(config, source)

    assert (summary.exit_code, summary.success) == (0, rows)
    puts = customer_puts(server)
    groups = by_row(puts)
    slow = [r for r in puts if r.outcome == "slow"]
    assert slow
    # A retry of a row still being processed meets 521 until the slow attempt is done.
    assert_nothing_resent_after_a_200(groups)
    written = json.loads(Path(summary.reports["summary"]).read_text())
    assert written["in_doubt_requests"] == len(slow)
    assert written["in_doubt"] == sum(any(r.outcome == "slow" for r in g) for g in groups.values())


# --- OAuth ------------------------------------------------------------------------------

def test_oauth_run_outliving_many_token_lifetimes_loses_no_row(tmp_path, sandbox_server):
    server = sandbox_server(token_ttl_seconds=0.5)
    rows = 240  # at 100 a second: about five token lifetimes
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"],
                       [[mobile(i), f"R{i}"] for i in range(rows)])
    config = config_for(tmp_path, server.url, password="demo-secret",
                        api={"auth": "oauth", "username": "demo-key"},
                        limits={"rate_per_minute": 100, "window_seconds": 1.0,
                                "window_margin_seconds": 0.01, "concurrency": 8})
    summary = run(config, source)

    assert (summary.exit_code, summary.success, summary.errors) == (0, rows, 0)
    puts = customer_puts(server)
    assert max(r.started for r in puts) - min(r.started for r in puts) > 4 * 0.5
    tokens = [r for r in server.state.requests if r.path == "/v3/oauth/token/generate"]
    assert len(tokens) >= 5
    assert all(r.status == 200 for r in puts)  # renewed before expiry: not even one 401
    assert len({r.headers["X-CAP-API-OAUTH-TOKEN"] for r in puts}) >= 5


def test_refused_oauth_secret_aborts_before_sending_anything(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(30)])
    config = config_for(tmp_path, server.url, password="not-the-secret",
                        api={"auth": "oauth", "username": "demo-key"})
    summary = run(config, source)

    assert summary.exit_code == 3 and "OAuth token request refused (HTTP 401)" in summary.reason
    assert customer_puts(server) == []
    assert read_report(summary.reports["errors"]) == []
    skipped = read_report(summary.reports["skipped"])
    assert len(skipped) == 30 and all(r["_reason"] == "not_sent" for r in skipped)


# --- A tiny server for answers the sandbox does not give ----------------------------------

Answer = tuple[int, bytes, str, dict]  # status, body, content type, headers


class MiniApi:
    """A real HTTP server in a thread; `answer(n)` decides the n-th PUT's answer (0-based).
    `arrivals` holds (time.monotonic(), status) per PUT, in arrival order."""

    def __init__(self, answer: Callable[[int], Answer]):
        self.answer = answer
        self.arrivals: list[tuple[float, int]] = []
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        await request.read()
        status, body, content_type, headers = self.answer(len(self.arrivals))
        self.arrivals.append((arrived, status))
        return web.Response(status=status, body=body, content_type=content_type, headers=headers)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_put("/v2/customers/lookup", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> MiniApi:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


OK: Answer = (200, b'{"createdId": 1, "warnings": []}', "application/json", {})


def test_persistent_403_aborts_within_a_few_requests(tmp_path):
    page = b"<html><head><title>403 Forbidden</title></head><body>API not enabled</body></html>"
    with MiniApi(lambda n: (403, page, "text/html", {})) as api:
        source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(300)])
        config = config_for(tmp_path, api.url, limits={"concurrency": 4})
        summary = run(config, source)

    assert summary.exit_code == 3
    assert "refused the credentials 3 times in a row (HTTP 403: HTTP 403 (text/html): 403 Forbidden)" in summary.reason
    assert len(api.arrivals) <= 3 + 4  # the third refusal, plus what was already in flight
    errors, skipped = read_report(summary.reports["errors"]), read_report(summary.reports["skipped"])
    assert len(errors) + len(skipped) == 300 and all(r["_reason"] == "not_sent" for r in skipped)
    assert len(errors) <= len(api.arrivals) and all(r["_http_status"] == "403" for r in errors)


def test_wrong_base_url_aborts_instead_of_failing_every_row(tmp_path):
    with MiniApi(lambda n: (404, b"<html><title>404 Not Found</title></html>", "text/html", {})) as api:
        source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(300)])
        summary = run(config_for(tmp_path, api.url, limits={"concurrency": 4}), source)

    assert summary.exit_code == 3
    assert summary.reason.startswith("the API answered 3 rows in a row with HTTP 404 (text/html): 404 Not Found,"
                                     " which no row can get past; check [api] base_url")
    assert len(api.arrivals) <= 3 + 4


def test_retry_after_as_http_date_pauses_the_whole_pool(tmp_path):
    until: list[float] = []  # monotonic time the Retry-After date stands for

    def answer(n: int) -> Answer:
        if n:
            return OK
        now = datetime.now(UTC)
        date = (now + timedelta(seconds=2)).replace(microsecond=0)  # HTTP dates have whole seconds
        until.append(time.monotonic() + (date - now).total_seconds())
        return (429, b"", "text/plain", {"Retry-After": format_datetime(date, usegmt=True)})

    with MiniApi(answer) as api:
        source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(12)])
        summary = run(config_for(tmp_path, api.url, limits={"concurrency": 4, "rate_per_minute": 6000}), source)

    assert (summary.exit_code, summary.success, summary.throttled) == (0, 12, 1)
    throttled_at = api.arrivals[0][0]
    during = [t for t, _ in api.arrivals if throttled_at + 0.1 < t < until[0] - 0.05]
    assert during == []  # nobody started while the pool was paused
    assert sum(t >= until[0] - 0.05 for t, _ in api.arrivals) >= 8


def test_retry_after_seconds_pauses_the_whole_pool(tmp_path, sandbox_server):
    # The client believes it may send 40 a second; the API allows 10 and says when to retry.
    server = sandbox_server(rate_limit=RateLimit(10, 1.0, retry_after=True))
    rows = 24
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(rows)])
    config = config_for(tmp_path, server.url, limits={
        "rate_per_minute": 40, "window_seconds": 1.0, "window_margin_seconds": 0.0, "concurrency": 4,
        "max_attempts": 6, **FAST_BACKOFF})
    summary = run(config, source)

    assert (summary.exit_code, summary.success) == (0, rows)
    puts = customer_puts(server)
    throttled = [r for r in puts if r.status == 429]
    assert throttled and all(r.headers is not None for r in throttled)
    assert summary.throttled == len(throttled)
    admitted = [r.started for r in puts if r.admitted]
    for r in throttled:  # each said Retry-After: 1 (whole seconds, at least 1)
        assert not [t for t in admitted if r.started + 0.1 < t < r.started + 0.95], r.started


async def test_429_without_retry_after_backs_off_exponentially_with_full_jitter():
    config = load_config(None, overrides={"api.base_url": "http://unused", "api.username": "demo.till",
                                          "limits.max_attempts": 5, "limits.backoff_base_seconds": 0.01,
                                          "limits.backoff_cap_seconds": 0.03, "limits.concurrency": 1},
                         environ={"BATCH_UPDATER_PASSWORD": "demo-password"})
    pauses: list[float] = []
    slept: list[float] = []

    class SpyLimiter(RateLimiter):
        def pause(self, seconds: float) -> None:
            pauses.append(seconds)
            super().pause(seconds)

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)

    async with Sandbox(SandboxSettings(customers=10, faults=Faults(burst_429=1.0))) as sandbox:
        client = ApiClient.open(dataclasses.replace(config.api, base_url=sandbox.url), config.limits)
        limiter = SpyLimiter(600, 60.0)
        outcomes = []
        pool = WorkerPool(client, limiter, config.limits, outcomes.append, rng=random.Random(11),
                          sleep=record_sleep)
        pool.start()
        try:
            await pool.submit(Payload(2, Lookup("INSTORE", "mobile", mobile(1), None), {}))
            await pool.finish()
        finally:
            await client.close()
        puts = [r for r in sandbox.state.requests if r.method == "PUT"]

    rng = random.Random(11)
    expected = [backoff_delay(a, base=0.01, cap=0.03, rng=rng) for a in range(1, 5)]
    assert slept == pytest.approx(expected) and pauses == pytest.approx(expected)
    assert all(0 <= d <= min(0.03, 0.01 * 2 ** (a - 1)) for a, d in enumerate(slept, 1))
    assert len(set(slept)) == 4  # jittered, not fixed steps
    assert limiter.effective_rate < 600  # and the pool's rate was lowered
    assert [r.status for r in puts] == [429] * 5 and "Retry-After" not in puts[0].headers
    [outcome] = outcomes
    assert (outcome.status, outcome.stage, outcome.code, outcome.attempts) == (Status.ERROR, Stage.API, "429", 5)


# --- Circuit breaker ------------------------------------------------------------------------

def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


BREAKER = {"concurrency": 4, "max_attempts": 3, "consecutive_failures_to_abort": 5,
           "backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.05}


@pytest.mark.parametrize("faults", [Faults(error_503=1.0), Faults(drop_before=1.0)],
                         ids=["all-503", "all-dropped"])
def test_api_down_trips_the_circuit_breaker_after_a_bounded_number_of_requests(tmp_path, sandbox_server, faults):
    url = sandbox_server(faults=faults).url
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(500)])
    summary = run(config_for(tmp_path, url, limits=BREAKER), source)

    assert summary.exit_code == 3 and summary.status == "aborted"
    assert summary.reason.startswith("the API looks down: 5 rows in a row failed after 3 attempts (last: ")
    assert summary.reason.endswith("run the same command again: rows that failed this way, or were not"
                                   " sent, are sent again")
    assert summary.requests <= (5 + 4) * 3  # the failing rows, plus those already in flight
    errors, skipped = read_report(summary.reports["errors"]), read_report(summary.reports["skipped"])
    assert len(errors) + len(skipped) == 500 and len(errors) <= 5 + 4
    assert all(r["_reason"] == "not_sent" for r in skipped)


def test_cli_says_what_happened_and_how_to_continue_when_the_api_is_down(tmp_path, sandbox_server):
    server = sandbox_server(faults=Faults(error_502=1.0))
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(100)])
    config = write_config(tmp_path, server.url, limits=BREAKER)
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config)])

    assert result.exit_code == 3, result.output
    assert ("aborted: the API looks down: 5 rows in a row failed after 3 attempts"
            " (last: HTTP 502 (text/html): 502 Bad Gateway); wait for it to recover, then run the same command"
            " again: rows that failed this way, or were not sent, are sent again"
            in result.output)
