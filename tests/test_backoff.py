"""Full-jitter backoff and Retry-After parsing, with seeded randomness."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch_updater.send.backoff import MAX_RETRY_AFTER, backoff_delay, parse_retry_after, retry_delay

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


@given(
    attempt=st.integers(1, 200),
    base=st.floats(0.01, 5.0),
    cap=st.floats(0.1, 300.0),
    seed=st.integers(0, 2**32),
)
def test_backoff_stays_within_the_jitter_bounds(attempt, base, cap, seed):
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(attempt - 1, 64))


def test_backoff_grows_exponentially_until_the_cap():
    rng = random.Random(7)
    means = [statistics.fmean(backoff_delay(a, base=0.5, cap=60.0, rng=rng) for _ in range(4000))
             for a in range(1, 11)]
    ceilings = [min(60.0, 0.5 * 2 ** (a - 1)) for a in range(1, 11)]
    for mean, ceiling in zip(means, ceilings):
        assert mean == pytest.approx(ceiling / 2, rel=0.05)  # uniform(0, ceiling)
    assert means[9] == pytest.approx(means[8], rel=0.1)  # both capped at 60


def test_backoff_survives_huge_attempts():
    assert 0.0 <= backoff_delay(100_000, cap=60.0, rng=random.Random(1)) <= 60.0


def test_full_jitter_spreads_over_the_whole_range():
    rng = random.Random(42)
    delays = [backoff_delay(5, base=0.5, cap=60.0, rng=rng) for _ in range(1000)]  # ceiling 8 s
    assert min(delays) < 0.2 and max(delays) > 7.8
    assert len(set(delays)) == 1000
    assert sum(d < 4.0 for d in delays) == pytest.approx(500, abs=60)


def test_backoff_is_reproducible_with_a_seed():
    first = [backoff_delay(a, rng=random.Random(3)) for a in range(1, 8)]
    assert first == [backoff_delay(a, rng=random.Random(3)) for a in range(1, 8)]


def test_backoff_attempts_are_one_based():
    with pytest.raises(ValueError):
        backoff_delay(0, rng=random.Random(0))


@pytest.mark.parametrize("value, seconds", [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5),
                                            ("99999", MAX_RETRY_AFTER)])
def test_retry_after_in_seconds(value, seconds):
    assert parse_retry_after(value) == seconds


def test_retry_after_as_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now=NOW) == 120.0
    assert parse_retry_after(http_date(NOW + timedelta(seconds=42.0)), now=NOW) == 42.0
    assert parse_retry_after(http_date(NOW - timedelta(hours=1)), now=NOW) == 0.0  # already past
    assert parse_retry_after(http_date(NOW + timedelta(days=2)), now=NOW) == MAX_RETRY_AFTER
    assert parse_retry_after("Wed, 21 Oct 2015 07:30:00 -0000", now=NOW) == 120.0  # naive → UTC
    assert parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now=NOW.replace(tzinfo=None)) == 120.0


def test_retry_after_date_defaults_to_the_real_now():
    soon = datetime.now(UTC) + timedelta(seconds=30)
    assert 25.0 <= parse_retry_after(http_date(soon)) <= 30.0


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "-5", "1e3", "nan", "inf", "1.", ".5", "12 34",
                                   "١٢", "Wed, 32 Oct 2015 07:28:00 GMT", "<html>502 Bad Gateway</html>"])
def test_unusable_retry_after_is_none(value):
    assert parse_retry_after(value, now=NOW) is None


@given(st.text())
def test_retry_after_never_raises_and_stays_in_range(value):
    seconds = parse_retry_after(value, now=NOW)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER


def test_retry_delay_prefers_a_usable_retry_after():
    rng = random.Random(0)
    assert retry_delay(3, "17", rng=rng, base=0.5, cap=60.0) == 17.0
    assert retry_delay(3, "0", rng=rng, base=0.5, cap=60.0) == 0.0  # valid: retry now
    assert retry_delay(1, "Wed, 21 Oct 2015 07:30:00 GMT", rng=rng, base=0.5, cap=60.0, now=NOW) == 120.0


@pytest.mark.parametrize("header", [None, "garbage", "-1"])
def test_retry_delay_falls_back_to_backoff(header):
    expected = backoff_delay(4, base=0.5, cap=60.0, rng=random.Random(9))
    assert retry_delay(4, header, rng=random.Random(9), base=0.5, cap=60.0) == expected
    assert 0.0 <= expected <= 4.0
