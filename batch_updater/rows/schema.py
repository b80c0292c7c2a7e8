"""The pandera schema of the canonical columns, and per-row problem messages.

Every field of the API's request body has a check (docs/api.md, "Request body");
`fields.*` and `extendedFields.*` are text unless the config's [types] table gives
them a type. Validation is lazy: every problem of a row is reported in one message, e.g.
`commChannels.email.value "bob@" is not an email address;
loyaltyProgramEnrollments.loyaltyPoints "-5" must be a whole number ≥ 0`.

Cells arrive trimmed, as text (object columns). An empty cell means "leave alone" and
passes every column check; identifierValue is the one required cell. Checks that
look across columns (the identifier's format by its name, accounts, push sources,
a channel's value, an enrolment's programId) are frame-wide checks.

Speed: each check works on the column's Python list (pandas' .str methods cost 3-10×
more on text columns), and checks built on a parser judge each distinct value once.
Nulls cannot occur, so pandera's null handling is switched off (ignore_na=False).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import pandera.pandas as pa

from ..config import IDENTIFIER_NAMES, MULTI_ACCOUNT_SOURCES, SOURCES
from ..input.columns import CHANNEL_TYPES
from .cells import DateTimes, is_date_or_date_time, parse_bool, parse_date, parse_float, parse_int

MOBILE = re.compile(r"\d{8,15}", re.ASCII)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
PUSH_TOKEN = re.compile(r"\S{16,4096}")
PUSH_SOURCES = ("MOBILE_APP", "INSTORE", "MARTJACK", "ECOMMERCE", "WEBSITE")
LOYALTY_TYPES = ("loyalty", "non_loyalty")
NAME_LIMIT = 100
FRAME_CHECK = "@"  # prefix of a frame-wide check's error: "@column|message"
QUOTE_LIMIT = 60   # longer values are shortened in messages

MOBILE_ERROR = "is not a mobile number: digits only with the country code, 8 to 15 digits (e.g. 919845012345)"
EMAIL_ERROR = "is not an email address"
BOOLEAN_ERROR = "is not true or false (use true/false, yes/no or 1/0)"
DATE_ERROR = "is not a date (use YYYY-MM-DD)"
DATE_TIME_ERROR = ("is not a date or date-time (use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS"
                   " or YYYY-MM-DDTHH:MM:SS+05:30)")

Test = Callable[[str], bool]


def _series(values, like: pd.Series | pd.DataFrame) -> pd.Series:
    return pd.Series(values, index=like.index, dtype=bool)


def each_value(test: Test) -> Callable[[pd.Series], pd.Series]:
    """A column check from a test of one non-empty cell, run once per distinct value."""
    def check(column: pd.Series) -> pd.Series:
        codes, distinct = pd.factorize(column.to_numpy())
        verdict = np.array([value == "" or bool(test(value)) for value in distinct.tolist()] + [True],
                           dtype=bool)
        return _series(verdict[codes], column)  # code -1 (never here: no nulls) would pass
    return check


def matching(regex: re.Pattern) -> Callable[[pd.Series], pd.Series]:
    """Every non-empty cell matches `regex` (the test inlined: a call per cell costs 40%)."""
    match = regex.fullmatch

    def check(column: pd.Series) -> pd.Series:
        return _series([value == "" or match(value) is not None for value in column.tolist()], column)
    return check


def at_most(limit: int) -> Callable[[pd.Series], pd.Series]:
    """Every cell has at most `limit` characters."""
    def check(column: pd.Series) -> pd.Series:
        values = column.tolist()
        return _series(np.fromiter(map(len, values), dtype=np.int64, count=len(values)) <= limit, column)
    return check


def one_of(values: Iterable[str]) -> Test:
    """Any case: `LOYALTY` is loyalty (mapping sends the listed spelling)."""
    allowed = frozenset(v.lower() for v in values)
    return lambda value: value.lower() in allowed


def _whole_number_at_least(minimum: int) -> Test:
    def test(value: str) -> bool:
        number = parse_int(value)
        return number is not None and number >= minimum
    return test


def _check(test: Test, error: str) -> pa.Check:
    return pa.Check(each_value(test), error=error, ignore_na=False)


def _listing(values: Iterable[str]) -> str:
    return ", ".join(values)


MOBILE_CHECK = pa.Check(matching(MOBILE), error=MOBILE_ERROR, ignore_na=False)
EMAIL_CHECK = pa.Check(matching(EMAIL), error=EMAIL_ERROR, ignore_na=False)
BOOLEAN_CHECK = _check(lambda v: parse_bool(v) is not None, BOOLEAN_ERROR)


class Checks:
    """The checks of each canonical column, given the config's [types] and time zone."""

    def __init__(self, types: Mapping[str, str | tuple[str, ...]] | None = None,
                 timezone: str = "UTC"):
        self.types = {name.lower(): kind for name, kind in (types or {}).items()}
        self.datetimes = DateTimes(timezone or "UTC")

    def column(self, name: str) -> list[pa.Check]:
        if name == "identifierValue":
            return [pa.Check(lambda s: _series((s.to_numpy() != "").tolist(), s),
                             error="is required", ignore_na=False)]
        if name == "identifierName":
            return [_check(one_of(IDENTIFIER_NAMES), f"is not one of {_listing(IDENTIFIER_NAMES)}")]
        if name == "source":
            return [_check(one_of(SOURCES), f"is not a source the API knows ({_listing(SOURCES)})")]
        if name == "loyaltyType":
            return [_check(one_of(LOYALTY_TYPES), "is not loyalty or non_loyalty")]
        if name in ("firstName", "lastName"):
            return [pa.Check(at_most(NAME_LIMIT), error=f"is longer than {NAME_LIMIT} characters",
                             ignore_na=False)]
        family, _, rest = name.partition(".")
        if family in ("fields", "extendedFields"):
            return self.custom_field(name)
        if family == "identifiers":
            return {"mobile": [MOBILE_CHECK], "email": [EMAIL_CHECK]}.get(rest, [])
        if family == "loyaltyProgramEnrollments":
            return self.enrolment(rest)
        if family == "commChannels":
            kind, _, attribute = rest.partition(".")
            return self.channel(kind, attribute)
        return []

    def custom_field(self, name: str) -> list[pa.Check]:
        kind = self.types.get(name.lower(), "string")
        if isinstance(kind, tuple):
            return [_check(one_of(kind), f"is not one of {_listing(kind)}")]
        if kind == "int":
            return [_check(lambda v: parse_int(v) is not None, "is not a whole number")]
        if kind == "float":
            return [_check(lambda v: parse_float(v) is not None, "is not a number (e.g. 12.5)")]
        if kind == "bool":
            return [BOOLEAN_CHECK]
        if kind == "date":
            return [_check(lambda v: parse_date(v) is not None, DATE_ERROR)]
        if kind == "datetime":
            return [_check(lambda v: self.datetimes.moment(v) is not None, DATE_TIME_ERROR)]
        return []

    def enrolment(self, attribute: str) -> list[pa.Check]:
        minimum = {"programId": 1, "tierNumber": 1, "loyaltyPoints": 0}.get(attribute)
        if minimum is not None:
            return [_check(_whole_number_at_least(minimum), f"must be a whole number ≥ {minimum}")]
        return [_check(lambda v: self.datetimes.expiry(v) is not None, DATE_TIME_ERROR)]

    def channel(self, kind: str, attribute: str) -> list[pa.Check]:
        if attribute in ("primary", "verified"):
            return [BOOLEAN_CHECK]
        if attribute == "lastViewedDate":
            return [_check(is_date_or_date_time, DATE_TIME_ERROR)]
        if attribute != "value":
            return []  # meta.<key>: free text
        if kind == "mobile":
            return [MOBILE_CHECK]
        if kind == "email":
            return [EMAIL_CHECK]
        if kind == "mobilePush":
            return [pa.Check(matching(PUSH_TOKEN), ignore_na=False,
                             error="is not a push token (16 or more characters, no spaces)")]
        return []


def _frame_checks(columns: list[str], defaults: dict[str, str | None]) -> list[pa.Check]:
    """Checks across columns: the identifier's format by its name, accounts, push sources,
    a channel's value, an enrolment's programId. A check whose answer the config already
    fixes (no identifierName or source column) is left out, or made a column check."""

    def column_or_default(frame: pd.DataFrame, name: str, default: str | None, case) -> list[str]:
        fallback = case(default or "")
        if name not in frame:
            return [fallback] * len(frame)
        return [case(v) if v else fallback for v in frame[name].tolist()]

    def kinds(frame: pd.DataFrame) -> list[str]:
        return column_or_default(frame, "identifierName", defaults["identifier_name"], str.lower)

    def sources(frame: pd.DataFrame) -> list[str]:
        return column_or_default(frame, "source", defaults["source"], str.upper)

    def identifier_format(kind_wanted: str, regex: re.Pattern):
        match = regex.fullmatch

        def check(frame: pd.DataFrame) -> pd.Series:
            values = frame["identifierValue"].tolist()
            return _series([kind != kind_wanted or not value or match(value) is not None
                            for kind, value in zip(kinds(frame), values)], frame)
        return check

    def account_present(frame: pd.DataFrame) -> pd.Series:
        accounts = column_or_default(frame, "accountId", defaults["account_id"], str)
        return _series([not (source in MULTI_ACCOUNT_SOURCES and not account)
                        for source, account in zip(sources(frame), accounts)], frame)

    checks = []
    if "identifierName" in columns:
        checks += [
            pa.Check(identifier_format("mobile", MOBILE), ignore_na=False,
                     error=f"{FRAME_CHECK}identifierValue|{MOBILE_ERROR}"),
            pa.Check(identifier_format("email", EMAIL), ignore_na=False,
                     error=f"{FRAME_CHECK}identifierValue|{EMAIL_ERROR}"),
        ]
    if "source" in columns and not ("accountId" not in columns and defaults["account_id"]):
        checks.append(pa.Check(account_present, ignore_na=False,
                               error=f"{FRAME_CHECK}accountId|is required for multi-account sources"
                                     f" ({_listing(MULTI_ACCOUNT_SOURCES)})"))
    push = [c for c in columns if c.startswith("commChannels.mobilePush.")]
    if push and ("source" in columns or defaults["source"] not in PUSH_SOURCES):
        def push_source(frame: pd.DataFrame) -> pd.Series:
            uses_push = _any_set(frame, push)
            return _series([not used or source in PUSH_SOURCES
                            for used, source in zip(uses_push.tolist(), sources(frame))], frame)
        checks.append(pa.Check(push_source, ignore_na=False,
                               error=f"{FRAME_CHECK}commChannels.mobilePush|is only supported for"
                                     f" sources {_listing(PUSH_SOURCES)}"))
    for kind in CHANNEL_TYPES:
        value = f"commChannels.{kind}.value"
        others = [c for c in columns if c.startswith(f"commChannels.{kind}.") and c != value]
        if others:
            checks.append(_needs(value, others, f"is required when other commChannels.{kind} columns"
                                                f" are set"))
    enrolment = [c for c in columns if c.startswith("loyaltyProgramEnrollments.")
                 and c != "loyaltyProgramEnrollments.programId"]
    if enrolment:
        checks.append(_needs("loyaltyProgramEnrollments.programId", enrolment,
                             "is required when other loyaltyProgramEnrollments columns are set"))
    return checks


def _filled(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame[name].to_numpy() != ""


def _any_set(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    used = np.zeros(len(frame), dtype=bool)
    for name in columns:
        used |= _filled(frame, name)
    return used


def _needs(required: str, others: list[str], error: str) -> pa.Check:
    def check(frame: pd.DataFrame) -> pd.Series:
        return _series(_filled(frame, required) | ~_any_set(frame, others), frame)
    return pa.Check(check, ignore_na=False, error=f"{FRAME_CHECK}{required}|{error}")


class RowValidator:
    """Validates canonical-named chunks; returns {row number: message} for invalid rows."""

    def __init__(self, columns: list[str], *, source: str, identifier_name: str,
                 account_id: str | None, types: Mapping[str, str | tuple[str, ...]] | None = None,
                 timezone: str = "UTC"):
        defaults = {"source": source, "identifier_name": identifier_name, "account_id": account_id}
        checks = Checks(types, timezone)
        by_column = {name: checks.column(name) for name in columns}
        if "identifierName" not in columns:  # every row's identifier is of the config's kind
            by_column["identifierValue"] += {"mobile": [MOBILE_CHECK], "email": [EMAIL_CHECK]}.get(
                identifier_name, [])
        # Text columns without a check (untyped fields, meta, most identifiers) stay out of
        # the schema: an empty Column costs pandera's per-column overhead and checks nothing.
        self.schema = pa.DataFrameSchema(
            {name: pa.Column(None, by_column[name], nullable=True) for name in columns if by_column[name]},
            checks=_frame_checks(columns, defaults),
            name="rows",
        )

    def problems(self, frame: pd.DataFrame) -> dict[int, str]:
        """`frame`: object columns of trimmed text, named canonically, indexed by row number."""
        try:
            self.schema.validate(frame, lazy=True, inplace=True)
        except pa.errors.SchemaErrors as exc:
            return _messages(exc.failure_cases, frame)
        return {}


def _messages(failures: pd.DataFrame, frame: pd.DataFrame) -> dict[int, str]:
    """One message per row, its problems in the file's column order."""
    order = {name: i for i, name in enumerate(frame.columns)}
    per_row: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for column, check, value, index in zip(failures["column"], failures["check"],
                                           failures["failure_case"], failures["index"]):
        if index is None or pd.isna(index):  # a check that crashed: a bug, never a bad cell
            raise RuntimeError(f"validation failed outside the rows: {column} {check} {value}")
        row = int(index)
        check = str(check)
        if check.startswith(FRAME_CHECK):
            column, _, check = check[len(FRAME_CHECK):].partition("|")
            value = frame.at[row, column] if column in frame else ""
        per_row[row].append((order.get(column, len(order)), describe(str(column), value, check)))
    return {row: "; ".join(dict.fromkeys(text for _, text in sorted(parts, key=lambda p: p[0])))
            for row, parts in sorted(per_row.items())}


def describe(column: str, value: object, error: str) -> str:
    """`column "value" error`, the value shortened when long and left out when empty."""
    # pandas-stubs type isna's argument as known scalars or arrays; at runtime it takes any object
    if value is None or value == "" or (not isinstance(value, str) and pd.isna(value)):  # type: ignore[call-overload]
        return f"{column} {error}"
    text = str(value).replace("\r", "\\r").replace("\n", "\\n")  # messages stay on one line
    if len(text) > QUOTE_LIMIT:
        text = text[:QUOTE_LIMIT - 1] + "…"
    return f'{column} "{text}" {error}'
