"""Pacing at exactly the API's limit: the window margin on a fake clock, then whole runs
against a sandbox that enforces a strict rolling window (asserting on what it saw)."""

from __future__ import annotations

import pytest
from conftest import FakeClock, config_for, customer_puts, mobile, run_for, write_csv
from conftest import max_in_window as max_in_closed_window

from batch_updater.config import load_config
from batch_updater.errors import ConfigError
from batch_updater.runner import run
from batch_updater.sandbox import RateLimit, max_in_window
from batch_updater.send.ratelimit import RateLimiter


def make(limit: int, window: float, margin: float) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(limit, window, margin=margin, clock=clock, sleep=clock.sleep), clock


async def test_margin_keeps_starts_a_limit_apart_more_than_a_window_apart():
    limiter, clock = make(10, 1.0, margin=0.05)
    starts = await run_for(limiter, clock, 5.0)
    for earlier, later in zip(starts, starts[10:]):
        assert later - earlier >= 1.05 - 1e-9
    assert max_in_closed_window(starts, 1.05) <= 10


@pytest.mark.parametrize("limit, window, margin", [(600, 60.0, 0.25), (1000, 60.0, 0.25), (50, 60.0, 0.25),
                                                   (100, 3.0, 0.0125)])
async def test_margin_costs_only_its_share_of_the_window(limit, window, margin):
    limiter, clock = make(limit, window, margin)
    starts = await run_for(limiter, clock, 20 * window)
    achieved = len(starts) / (20 * limit)
    assert achieved == pytest.approx(window / (window + margin), abs=1.5 / limit)
    assert achieved >= 0.99  # the default margin on a minute window keeps the 99% target


def test_margin_is_checked():
    with pytest.raises(ValueError):
        RateLimiter(10, 1.0, margin=1.0)
    with pytest.raises(ValueError):
        RateLimiter(10, 1.0, margin=-0.1)
    with pytest.raises(ConfigError, match=r"window_margin_seconds \(2\) must be shorter than window_seconds \(1\)"):
        load_config(None, overrides={"api.base_url": "http://x", "api.username": "u",
                                     "limits.window_seconds": 1.0, "limits.window_margin_seconds": 2.0},
                    environ={"BATCH_UPDATER_PASSWORD": "p"})


def test_defaults_are_a_minute_window_with_a_quarter_second_margin():
    limits = load_config(None, overrides={"api.base_url": "http://x", "api.username": "u"},
                         environ={"BATCH_UPDATER_PASSWORD": "p"}).limits
    assert (limits.window_seconds, limits.window_margin_seconds, limits.burst) == (60.0, 0.25, 1)


# A strict server: at most LIMIT admitted starts in any WINDOW, per credential. The client
# is configured with the same limit; the run covers WINDOWS windows.
LIMIT, WINDOW, WINDOWS = 20, 0.5, 6


@pytest.mark.parametrize("concurrency, latency", [(4, 0.0), (8, 0.03)])
def test_run_at_the_strict_limit_gets_no_429_and_never_exceeds_a_window(tmp_path, sandbox_server,
                                                                        concurrency, latency):
    server = sandbox_server(rate_limit=RateLimit(LIMIT, WINDOW), latency_seconds=latency)
    rows = LIMIT * WINDOWS
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"],
                       [[mobile(i), f"R{i}"] for i in range(rows)])
    config = config_for(tmp_path, server.url, limits={
        "rate_per_minute": LIMIT, "window_seconds": WINDOW, "window_margin_seconds": 0.02,
        "concurrency": concurrency})
    summary = run(config, source)

    puts = customer_puts(server)
    assert [r.status for r in puts if r.status != 200] == []  # not one 429
    assert (summary.exit_code, summary.success, summary.requests, summary.throttled) == (0, rows, rows, 0)
    arrivals = [r.started for r in puts]
    assert all(r.admitted for r in puts)
    assert max_in_window(arrivals, WINDOW) == LIMIT  # at the limit, never above it
    assert max(arrivals) - min(arrivals) >= (WINDOWS - 1) * WINDOW  # it did span the windows


def test_a_burst_still_respects_the_rolling_window(tmp_path, sandbox_server):
    server = sandbox_server(rate_limit=RateLimit(LIMIT, WINDOW))
    rows = LIMIT * 4
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(rows)])
    config = config_for(tmp_path, server.url, limits={
        "rate_per_minute": LIMIT, "window_seconds": WINDOW, "window_margin_seconds": 0.02,
        "burst": 5, "concurrency": 8})
    summary = run(config, source)

    puts = customer_puts(server)
    assert summary.throttled == 0 and all(r.status == 200 for r in puts)
    assert max_in_window([r.started for r in puts], WINDOW) <= LIMIT
