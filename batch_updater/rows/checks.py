"""Cell checks: the pandera checks of single columns, built from tests of one cell.

Each check works on the column's Python list (pandas' .str methods cost far more on text
columns), and checks built on a parser judge each distinct value once. Nulls cannot
occur (cells are text, an empty cell is ""), so pandera's null handling is off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import pandera.pandas as pa

from .cells import parse_bool, parse_int

MOBILE = re.compile(r"\d{8,15}", re.ASCII)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
PUSH_TOKEN = re.compile(r"\S{16,4096}")
PUSH_SOURCES = ("MOBILE_APP", "INSTORE", "MARTJACK", "ECOMMERCE", "WEBSITE")
NAME_LIMIT = 100
FRAME_CHECK = "@"  # prefix of a frame-wide check's error: "@column|message"
QUOTE_LIMIT = 60   # longer values are shortened in messages

MOBILE_ERROR = "is not a mobile number: digits only with the country code, 8 to 15 digits (e.g. 919845012345)"
EMAIL_ERROR = "is not an email address"
BOOLEAN_ERROR = "is not true or false (use true/false, yes/no or 1/0)"
DATE_ERROR = "is not a date (use YYYY-MM-DD)"
DATE_TIME_ERROR = ("is not a date or date-time (use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS"
                   " or YYYY-MM-DDTHH:MM:SS+05:30)")
_ORDER_EXAMPLES = {"DMY": ("DD/MM/YYYY", "DD/MM/YYYY HH:MM"), "MDY": ("MM/DD/YYYY", "MM/DD/YYYY HH:MM")}


def date_error(order: str = "YMD") -> str:
    """The date columns' message, naming the [input] date_order in force."""
    if order not in _ORDER_EXAMPLES:
        return DATE_ERROR
    return f'is not a date (use {_ORDER_EXAMPLES[order][0]}, as [input] date_order = "{order}", or YYYY-MM-DD)'


def date_time_error(order: str = "YMD") -> str:
    if order not in _ORDER_EXAMPLES:
        return DATE_TIME_ERROR
    day, moment = _ORDER_EXAMPLES[order]
    return (f'is not a date or date-time (use {day} or {moment}, as [input] date_order = "{order}",'
            " or YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS or YYYY-MM-DDTHH:MM:SS+05:30)")

Test = Callable[[str], bool]


def series_of(values, like: pd.Series | pd.DataFrame) -> pd.Series:
    return pd.Series(values, index=like.index, dtype=bool)


def each_value(test: Test) -> Callable[[pd.Series], pd.Series]:
    """A column check from a test of one non-empty cell, run once per distinct value."""
    def check(column: pd.Series) -> pd.Series:
        codes, distinct = pd.factorize(column.to_numpy())
        verdict = np.array([value == "" or bool(test(value)) for value in distinct.tolist()] + [True],
                           dtype=bool)
        return series_of(verdict[codes], column)  # code -1 (never here: no nulls) would pass
    return check


def matching(regex: re.Pattern) -> Callable[[pd.Series], pd.Series]:
    """Every non-empty cell matches `regex` (the test inlined: a call per cell costs 40%)."""
    match = regex.fullmatch

    def check(column: pd.Series) -> pd.Series:
        return series_of([value == "" or match(value) is not None for value in column.tolist()], column)
    return check


def at_most(limit: int) -> Callable[[pd.Series], pd.Series]:
    """Every cell has at most `limit` characters."""
    def check(column: pd.Series) -> pd.Series:
        values = column.tolist()
        return series_of(np.fromiter(map(len, values), dtype=np.int64, count=len(values)) <= limit, column)
    return check


def one_of(values: Iterable[str]) -> Test:
    """Any case: `LOYALTY` is loyalty (mapping sends the listed spelling)."""
    allowed = frozenset(v.lower() for v in values)
    return lambda value: value.lower() in allowed


def whole_number_at_least(minimum: int) -> Test:
    def test(value: str) -> bool:
        number = parse_int(value)
        return number is not None and number >= minimum
    return test


def cell_check(test: Test, error: str) -> pa.Check:
    return pa.Check(each_value(test), error=error, ignore_na=False)


def listing(values: Iterable[str]) -> str:
    return ", ".join(values)


MOBILE_CHECK = pa.Check(matching(MOBILE), error=MOBILE_ERROR, ignore_na=False)
EMAIL_CHECK = pa.Check(matching(EMAIL), error=EMAIL_ERROR, ignore_na=False)
BOOLEAN_CHECK = cell_check(lambda v: parse_bool(v) is not None, BOOLEAN_ERROR)


