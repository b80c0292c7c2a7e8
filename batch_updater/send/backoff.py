"""How long to wait before retrying a request.

The server's ``Retry-After`` wins when it sends a usable one; otherwise exponential
backoff with full jitter (a uniform draw up to the exponential ceiling), which spreads
a pool of retrying workers out instead of letting them retry in lockstep.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 3600.0  # an hour: anything longer is a misconfigured server, not advice
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # RFC 9110 says digits; tolerate "1.5"
_MAX_EXPONENT = 64  # beyond this the ceiling is `cap` anyway; avoids float overflow


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 60.0, rng: random.Random) -> float:
    """Full-jitter delay after failed ``attempt`` (1-based): uniform(0, min(cap, base * 2**(attempt-1)))."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    return rng.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    None when absent or unusable; a date in the past gives 0; capped at an hour.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    now = now or datetime.now(UTC)
    seconds = (_as_utc(when) - _as_utc(now)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def retry_delay(
    attempt: int,
    retry_after_header: str | None,
    *,
    rng: random.Random,
    base: float = 0.5,
    cap: float = 60.0,
    now: datetime | None = None,
) -> float:
    """The server's Retry-After when usable, else full-jitter backoff for ``attempt``."""
    retry_after = parse_retry_after(retry_after_header, now=now)
    if retry_after is not None:
        return retry_after
    return backoff_delay(attempt, base=base, cap=cap, rng=rng)


def _as_utc(moment: datetime) -> datetime:
    # parsedate_to_datetime returns a naive datetime for "-0000"; HTTP dates are GMT.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
