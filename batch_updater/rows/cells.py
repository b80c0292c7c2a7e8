"""Reading typed values out of text cells: booleans, whole numbers, numbers, dates, date-times.

Validation (schema.py) and mapping (mapping.py) share these parsers, so a value that
passes validation is exactly the value that is sent. Each parser returns None for text
it does not accept; cells arrive trimmed and non-empty.

Dates and times follow one rule, never shifting a value by a day:
- a date-time with an offset (`2027-12-31T23:59:59+05:30`, `...Z`) is sent as written
  (normalised to `YYYY-MM-DDTHH:MM:SS±hh:mm`);
- a date-time without an offset is read in the configured time zone ([input] timezone)
  and sent with that zone's offset on that date;
- a date alone, in an expiry column (`tierExpiryDate`, `pointsExpiryDate`), means the
  end of that day (23:59:59) in the configured zone, like the API's own examples; in a
  custom field typed `datetime` it means the start of that day (00:00:00).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The one boolean vocabulary: cells of the input file and values of the config alike.
TRUE_WORDS = frozenset({"true", "yes", "1", "y", "t", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "n", "f", "off"})
FIELD_TYPES = ("string", "int", "float", "bool", "date", "datetime")

_INT = re.compile(r"[+-]?\d{1,18}(?:\.0*)?", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?)?", re.ASCII)
END_OF_DAY = time(23, 59, 59)
START_OF_DAY = time(0, 0, 0)


def parse_bool(text: str) -> bool | None:
    low = text.lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    return None


def parse_int(text: str) -> int | None:
    """A whole number; `150.0` (as spreadsheets export it) counts as 150."""
    if _INT.fullmatch(text) is None:
        return None
    return int(text.split(".", 1)[0])


def parse_float(text: str) -> float | None:
    if _FLOAT.fullmatch(text) is None:
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def parse_date(text: str) -> str | None:
    """A calendar date written YYYY-MM-DD (sent the same way)."""
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    try:
        return date(*map(int, match.groups())).isoformat()
    except ValueError:
        return None


def zone(name: str) -> tzinfo:
    """The time zone named `name` (IANA, e.g. Asia/Kolkata, or UTC); ValueError if unknown."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as UTC,"
                         " Asia/Kolkata or Europe/London)") from None


class DateTimes:
    """Date-time parsing in one time zone, cached (files repeat the same dates a lot)."""

    def __init__(self, zone_name: str = "UTC"):
        self.zone_name = zone_name
        self.zone = zone(zone_name)
        self.expiry = lru_cache(maxsize=1 << 16)(lambda text: self._parse(text, END_OF_DAY))
        self.moment = lru_cache(maxsize=1 << 16)(lambda text: self._parse(text, START_OF_DAY))

    def _parse(self, text: str, day_time: time) -> str | None:
        """`YYYY-MM-DDTHH:MM:SS±hh:mm`, or None when `text` is not a date or date-time."""
        match = _DATE_TIME.fullmatch(text)
        if match is None:
            return None
        year, month, day, hour, minute, second, offset = match.groups()
        try:
            if hour is None:
                moment = datetime.combine(date(int(year), int(month), int(day)), day_time)
            else:
                moment = datetime(int(year), int(month), int(day), int(hour), int(minute),
                                  int(second or 0))
            moment = moment.replace(tzinfo=_offset(offset) if offset else self.zone)
            return moment.isoformat(timespec="seconds")
        except ValueError:
            return None


def _offset(text: str) -> timezone:
    if text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if minutes >= 60:
        raise ValueError(text)
    return timezone(sign * timedelta(hours=hours, minutes=minutes))  # ValueError past 24 h


_ANY_ZONE = DateTimes("UTC")


def is_date_or_date_time(text: str) -> bool:
    """For lastViewedDate: a real date, optionally with a time and offset (sent as written)."""
    return _ANY_ZONE.moment(text) is not None
