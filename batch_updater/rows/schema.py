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

Each column's checks come from the column registry (rows/registry.py); the cell checks
themselves are in rows/checks.py.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd
import pandera.pandas as pa

from ..input.columns import CHANNEL_TYPES, MULTI_ACCOUNT_SOURCES
from .checks import (
    EMAIL,
    EMAIL_CHECK,
    EMAIL_ERROR,
    FRAME_CHECK,
    MOBILE,
    MOBILE_CHECK,
    MOBILE_ERROR,
    PUSH_SOURCES,
    QUOTE_LIMIT,
    listing,
    series_of,
)
from .registry import ColumnRules, required


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
            return series_of([kind != kind_wanted or not value or match(value) is not None
                            for kind, value in zip(kinds(frame), values)], frame)
        return check

    def account_present(frame: pd.DataFrame) -> pd.Series:
        accounts = column_or_default(frame, "accountId", defaults["account_id"], str)
        return series_of([not (source in MULTI_ACCOUNT_SOURCES and not account)
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
                                     f" ({listing(MULTI_ACCOUNT_SOURCES)})"))
    push = [c for c in columns if c.startswith("commChannels.mobilePush.")]
    if push and ("source" in columns or defaults["source"] not in PUSH_SOURCES):
        def push_source(frame: pd.DataFrame) -> pd.Series:
            uses_push = _any_set(frame, push)
            return series_of([not used or source in PUSH_SOURCES
                            for used, source in zip(uses_push.tolist(), sources(frame))], frame)
        checks.append(pa.Check(push_source, ignore_na=False,
                               error=f"{FRAME_CHECK}commChannels.mobilePush|is only supported for"
                                     f" sources {listing(PUSH_SOURCES)}"))
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
        return series_of(_filled(frame, required) | ~_any_set(frame, others), frame)
    return pa.Check(check, ignore_na=False, error=f"{FRAME_CHECK}{required}|{error}")


# upsert: an empty cell here means the row could not be added if its customer is missing
REQUIRED_TO_ADD = required("is required to add a customer ([api] add_requires, upsert mode)")


class RowValidator:
    """Validates canonical-named chunks; returns {row number: message} for invalid rows."""

    def __init__(self, columns: list[str], *, source: str, identifier_name: str,
                 account_id: str | None, types: Mapping[str, str | tuple[str, ...]] | None = None,
                 timezone: str = "UTC", date_order: str = "YMD", required: Collection[str] = (),
                 mobiles_rewritten: bool = False):
        """`required`: columns every row must fill (upsert's [api] add_requires).
        `mobiles_rewritten`: [input] default_country is set, so rows/rewrite.py has already
        made every mobile value 8 to 15 digits or refused it: the mobile columns' own check
        (a regular expression per cell) would find nothing, and is left out."""
        defaults = {"source": source, "identifier_name": identifier_name, "account_id": account_id}
        rules = ColumnRules(types, timezone, date_order)
        by_column = {name: [check for check in rules.column(name).checks
                            if not (mobiles_rewritten and check is MOBILE_CHECK)] for name in columns}
        for name in required:
            if name in by_column:  # a column the file lacks is refused before (rows/org_fields.py)
                by_column[name].insert(0, REQUIRED_TO_ADD)
        if "identifierName" not in columns:  # every row's identifier is of the config's kind
            by_column["identifierValue"] += {"mobile": [] if mobiles_rewritten else [MOBILE_CHECK],
                                             "email": [EMAIL_CHECK]}.get(identifier_name, [])
        # Text columns without a check (untyped fields, meta, most identifiers) stay out of
        # the schema: an empty Column costs pandera's per-column overhead and checks nothing.
        self.schema = pa.DataFrameSchema(
            {name: pa.Column(None, by_column[name], nullable=True) for name in columns if by_column[name]},
            checks=_frame_checks(columns, defaults),
            name="rows",
        )

    def problems(self, frame: pd.DataFrame, judged: Mapping[int, Mapping[str, str]] | None = None) -> dict[int, str]:
        """`frame`: object columns of trimmed text, named canonically, indexed by row number.
        `judged`: row -> column -> message of cells refused before validation (rows/rewrite.py):
        their messages join the row's, and the checks leave those cells alone."""
        judged = judged or {}
        try:
            self.schema.validate(frame, lazy=True, inplace=True)
        except pa.errors.SchemaErrors as exc:
            return _messages(exc.failure_cases, frame, judged)
        return _messages(None, frame, judged) if judged else {}


def _messages(failures: pd.DataFrame | None, frame: pd.DataFrame,
              judged: Mapping[int, Mapping[str, str]]) -> dict[int, str]:
    """One message per row, its problems in the file's column order."""
    order = {name: i for i, name in enumerate(frame.columns)}
    per_row: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for row, refused in judged.items():
        for column, message in refused.items():
            per_row[row].append((order.get(column, len(order)), message))
    found = () if failures is None else zip(failures["column"], failures["check"], failures["failure_case"],
                                            failures["index"])
    for column, check, value, index in found:
        if index is None or pd.isna(index):  # a check that crashed: a bug, never a bad cell
            raise RuntimeError(f"validation failed outside the rows: {column} {check} {value}")
        row = int(index)
        check = str(check)
        if check.startswith(FRAME_CHECK):
            column, _, check = check[len(FRAME_CHECK):].partition("|")
            value = frame.at[row, column] if column in frame else ""
        if column in judged.get(row, ()):
            continue  # refused before validation, with its own message
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
