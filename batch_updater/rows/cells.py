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

These parsers read ISO dates only. `[input] date_order = "DMY"` or `"MDY"` lets a file write
dates as 17/05/1990 (or with - or .): `DateOrder` turns such a date into ISO before
validation (rows/rewrite.py), so the parsers, and what is sent, stay as they are.
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
DATE_ORDERS = ("YMD", "DMY", "MDY")  # YMD: ISO only

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
# day and month (either order) with one separator, a four-digit year, then maybe a time
_NUMERIC_DATE = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4})([T ].*)?", re.ASCII | re.DOTALL)
_TIME_HOUR = re.compile(r"^([T ])(\d):", re.ASCII)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
ORDER_WORDS = {"DMY": "day/month/year", "MDY": "month/day/year"}


class DateOrder:
    """Dates written day first (DMY) or month first (MDY), to ISO: `17/05/1990 23:59` ->
    `1990-05-17 23:59` (the time, if any, is left to the ISO parsers)."""

    def __init__(self, order: str):
        if order not in ORDER_WORDS:
            raise ValueError(f"date order {order!r} is not DMY or MDY")
        self.order = order

    def iso(self, text: str) -> str:
        """`text` with its date in ISO; as it is when it is not written in this order (an ISO
        date from a spreadsheet cell, or something validation will refuse); ValueError
        saying why when it is, but names no real date (31/02/1990)."""
        match = _NUMERIC_DATE.fullmatch(text)
        if match is None:
            return text
        first, _, second, year, rest = match.groups()
        day, month = (first, second) if self.order == "DMY" else (second, first)
        try:
            found = date(int(year), int(month), int(day))
        except ValueError:
            raise ValueError(self._why_not(int(day), int(month), int(year))) from None
        return found.isoformat() + _TIME_HOUR.sub(r"\g<1>0\2:", rest or "", count=1)  # 7:05 -> 07:05

    def _why_not(self, day: int, month: int, year: int) -> str:
        setting = f'[input] date_order = "{self.order}" ({ORDER_WORDS[self.order]})'
        if not 1 <= month <= 12:
            # No number of its own in the text: rows failing alike group as one cause.
            other = "MDY" if self.order == "DMY" else "DMY"
            hint = ""
            if 1 <= day <= 12 and _real(year, day, month):
                hint = f" (read {ORDER_WORDS[other]}, it is a date: check date_order)"
            return f"is not a date under {setting}: its month is over 12{hint}"
        return f"is not a date under {setting}: {MONTHS[month - 1]} {year} has no day {day}"


def _real(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def is_date_or_date_time(text: str) -> bool:
    """For lastViewedDate: a real date, optionally with a time and offset (sent as written)."""
    return _ANY_ZONE.moment(text) is not None
