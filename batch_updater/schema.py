"""The pandera schema of the canonical columns, and per-row problem messages.

Validation is lazy: every problem of a row is reported in one message, e.g.
`commChannels.email.value "bob@" is not an email address; loyaltyProgramEnrollments.loyaltyPoints "-5" must be a whole number ≥ 0`.
Empty cells mean "leave alone" and always pass, except identifierValue, which is required.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable

import pandas as pd
import pandera.pandas as pa

from .config import IDENTIFIER_NAMES, MULTI_ACCOUNT_SOURCES, SOURCES

MOBILE = r"\d{8,15}"
EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s.]+"
PUSH_TOKEN = r"\S{16,4096}"
BOOLEAN_WORDS = ("true", "false", "yes", "no", "1", "0", "y", "n", "t", "f")
DATE = r"\d{4}-\d{2}-\d{2}"
DATE_TIME = DATE + r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
PUSH_SOURCES = ("MOBILE_APP", "INSTORE", "MARTJACK", "ECOMMERCE", "WEBSITE")
NAME_LIMIT = 100
FRAME_CHECK = "@"  # prefix of a frame-wide check's error: "@column|message"


def _blank_or(test):
    return lambda s: (s == "") | test(s)


def _matches(pattern: str):
    return _blank_or(lambda s: s.str.fullmatch(pattern, flags=re.ASCII).fillna(False).astype(bool))


def _one_of(values: Iterable[str], *, case: bool = True):
    values = list(values)
    if case:
        return _blank_or(lambda s: s.str.strip().isin(values))
    lowered = [v.lower() for v in values]
    return _blank_or(lambda s: s.str.strip().str.lower().isin(lowered))


def _int_at_least(minimum: int):
    def test(s: pd.Series) -> pd.Series:
        ok = s.str.strip().str.fullmatch(r"[+-]?\d{1,18}").fillna(False).astype(bool)
        numbers = pd.to_numeric(s.where(ok, "0").str.strip(), errors="coerce")
        return ok & (numbers >= minimum)
    return _blank_or(test)


def _check(test, error: str) -> pa.Check:
    return pa.Check(test, error=error)


MOBILE_ERROR = "is not a mobile number: digits only with the country code, 8 to 15 digits (e.g. 919845012345)"
EMAIL_ERROR = "is not an email address"
MOBILE_CHECK = _check(_matches(MOBILE), MOBILE_ERROR)
EMAIL_CHECK = _check(_matches(EMAIL), EMAIL_ERROR)
BOOLEAN_CHECK = _check(_one_of(BOOLEAN_WORDS, case=False), "is not true or false (use true/false, yes/no or 1/0)")
DATE_TIME_CHECK = _check(_matches(DATE_TIME), "is not a date or date-time (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS+05:30)")


def column_checks(name: str) -> list[pa.Check]:
    """The checks of one canonical column."""
    if name == "identifierValue":
        return [_check(lambda s: s.str.strip() != "", "is required")]
    if name == "identifierName":
        return [_check(_one_of(IDENTIFIER_NAMES), f"is not one of {', '.join(IDENTIFIER_NAMES)}")]
    if name == "source":
        return [_check(_one_of(SOURCES), "is not a known source (e.g. INSTORE, MOBILE_APP, WEBSITE)")]
    if name == "loyaltyType":
        return [_check(_one_of(("loyalty", "non_loyalty")), "is not loyalty or non_loyalty")]
    if name in ("firstName", "lastName"):
        return [_check(lambda s: s.str.len() <= NAME_LIMIT, f"is longer than {NAME_LIMIT} characters")]
    family, _, rest = name.partition(".")
    if family == "identifiers":
        return _identifier_checks(rest)
    if family == "loyaltyProgramEnrollments":
        return _enrolment_checks(rest)
    if family == "commChannels":
        return _channel_checks(*rest.split(".", 1))
    return []


def _identifier_checks(kind: str) -> list[pa.Check]:
    if kind == "mobile":
        return [MOBILE_CHECK]
    if kind == "email":
        return [EMAIL_CHECK]
    return []


def _enrolment_checks(attribute: str) -> list[pa.Check]:
    minimum = {"programId": 1, "tierNumber": 1, "loyaltyPoints": 0}.get(attribute)
    if minimum is not None:
        return [_check(_int_at_least(minimum), f"must be a whole number ≥ {minimum}")]
    return [DATE_TIME_CHECK]


def _channel_checks(kind: str, attribute: str) -> list[pa.Check]:
    if attribute in ("primary", "verified"):
        return [BOOLEAN_CHECK]
    if attribute == "lastViewedDate":
        if kind != "mobilePush":
            return [_check(lambda s: s == "", "is only allowed for mobilePush channels")]
        return [DATE_TIME_CHECK]
    if attribute != "value":
        return []
    if kind == "mobile":
        return [MOBILE_CHECK]
    if kind == "email":
        return [EMAIL_CHECK]
    if kind == "mobilePush":
        return [_check(_matches(PUSH_TOKEN), "is not a push token (16 or more characters, no spaces)")]
    return []


def _frame_checks(columns: list[str], defaults: dict[str, str | None]) -> list[pa.Check]:
    """Checks across columns: the identifier's format by its name, accounts, push sources."""

    def column_or_default(frame: pd.DataFrame, name: str, default: str | None) -> pd.Series:
        if name in frame:
            return frame[name].str.strip().where(frame[name].str.strip() != "", default or "")
        return pd.Series(default or "", index=frame.index)

    def identifier_format(kind_wanted: str, pattern: str):
        def check(frame: pd.DataFrame) -> pd.Series:
            kind = column_or_default(frame, "identifierName", defaults["identifier_name"])
            value = frame["identifierValue"].str.strip()
            matches = value.str.fullmatch(pattern, flags=re.ASCII).fillna(False).astype(bool)
            return (kind != kind_wanted) | (value == "") | matches
        return check

    def account_present(frame: pd.DataFrame) -> pd.Series:
        source = column_or_default(frame, "source", defaults["source"])
        account = column_or_default(frame, "accountId", defaults["account_id"])
        return ~(source.isin(MULTI_ACCOUNT_SOURCES) & (account == ""))

    checks = [
        pa.Check(identifier_format("mobile", MOBILE), error=f"{FRAME_CHECK}identifierValue|{MOBILE_ERROR}"),
        pa.Check(identifier_format("email", EMAIL), error=f"{FRAME_CHECK}identifierValue|{EMAIL_ERROR}"),
        pa.Check(account_present, error=f"{FRAME_CHECK}accountId|is required for multi-account sources (WECHAT, FACEBOOK, MOBILE_APP, LINE)"),
    ]
    push = [c for c in columns if c.startswith("commChannels.mobilePush.")]
    if push:
        def push_source(frame: pd.DataFrame) -> pd.Series:
            source = column_or_default(frame, "source", defaults["source"])
            uses_push = (frame[push] != "").any(axis=1)
            return ~uses_push | source.isin(PUSH_SOURCES)
        checks.append(pa.Check(push_source, error=f"{FRAME_CHECK}commChannels.mobilePush|is only supported for sources {', '.join(PUSH_SOURCES)}"))
    return checks


class RowValidator:
    """Validates canonical-named chunks; returns {row number: message} for invalid rows."""

    def __init__(self, columns: list[str], *, source: str, identifier_name: str, account_id: str | None):
        defaults = {"source": source, "identifier_name": identifier_name, "account_id": account_id}
        self._schema = pa.DataFrameSchema(
            {name: pa.Column(str, column_checks(name), nullable=False, coerce=True) for name in columns},
            checks=_frame_checks(columns, defaults),
        )

    def problems(self, frame: pd.DataFrame) -> dict[int, str]:
        try:
            self._schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            return _messages(exc.failure_cases, frame)
        return {}


def _messages(failures: pd.DataFrame, frame: pd.DataFrame) -> dict[int, str]:
    per_row: dict[int, list[str]] = defaultdict(list)
    for column, check, value, index in zip(failures["column"], failures["check"],
                                           failures["failure_case"], failures["index"]):
        if index is None or pd.isna(index):
            continue
        row = int(index)
        if isinstance(check, str) and check.startswith(FRAME_CHECK):
            column, _, check = check[len(FRAME_CHECK):].partition("|")
            value = frame.at[row, column] if column in frame else ""
        per_row[row].append(_describe(str(column), value, str(check)))
    return {row: "; ".join(dict.fromkeys(parts)) for row, parts in sorted(per_row.items())}


def _describe(column: str, value: object, error: str) -> str:
    if value is None or value == "" or (not isinstance(value, str) and pd.isna(value)):
        return f"{column} {error}"
    return f'{column} "{value}" {error}'
