"""The column registry: for every canonical column, where its cells go (the lookup query or
a part of the request body), how each cell is checked, and how it is converted.

The schema (rows/schema.py) takes the checks from here, the mapping (rows/mapping.py) the
part, key and converter; the names and their families come from input/columns.py, the
field types from the config's [types]. So a column is described in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandera.pandas as pa

from ..input.columns import IDENTIFIER_NAMES, LOYALTY_TYPES, SOURCES
from .cells import DateTimes, is_date_or_date_time, parse_bool, parse_date, parse_float, parse_int
from .checks import (
    BOOLEAN_CHECK,
    EMAIL_CHECK,
    MOBILE_CHECK,
    NAME_LIMIT,
    PUSH_TOKEN,
    at_most,
    cell_check,
    date_error,
    date_time_error,
    listing,
    matching,
    one_of,
    series_of,
    whole_number_at_least,
)

Convert = Callable[[str], Any]
ENROLMENT_MINIMUMS = {"programId": 1, "tierNumber": 1, "loyaltyPoints": 0}  # whole numbers
def required(error: str = "is required") -> pa.Check:
    return pa.Check(lambda s: series_of((s.to_numpy() != "").tolist(), s), error=error, ignore_na=False)


REQUIRED = required()


def spelling(values: Sequence[str]) -> Convert:
    """Any case in, the listed spelling out (`LOYALTY` -> `loyalty`, `instore` -> `INSTORE`)."""
    canonical = {v.lower(): v for v in values}
    return lambda text: canonical.get(text.lower(), text)


@dataclass(frozen=True)
class Column:
    part: str | None                 # the body part ("profile", "channel:email", ...); None: the lookup query
    key: str                         # the key within the part
    checks: tuple[pa.Check, ...] = ()
    convert: Convert | None = None   # None: the text as it is
    holds: str | None = None         # "mobile", "date" or "datetime": values rows/rewrite.py may rewrite


class ColumnRules:
    """Every canonical column's Column, given the config's [types], time zone and date order."""

    def __init__(self, types: Mapping[str, str | tuple[str, ...]] | None = None, timezone: str = "UTC",
                 date_order: str = "YMD"):
        self.types = {name.lower(): kind for name, kind in (types or {}).items()}
        self.datetimes = DateTimes(timezone or "UTC")
        self.date_error, self.date_time_error = date_error(date_order), date_time_error(date_order)

    def column(self, name: str) -> Column:
        plain = self._plain(name)
        if plain is not None:
            return plain
        family, _, rest = name.partition(".")
        if family in ("fields", "extendedFields"):
            return self._custom_field(family, rest, name)
        if family == "identifiers":
            return Column("identifiers", rest, _identifier_checks(rest), holds=_holds(rest))
        if family == "loyaltyProgramEnrollments":
            return self._enrolment(rest)
        if family == "commChannels":
            kind, _, attribute = rest.partition(".")
            return self._channel(kind, attribute)
        return Column(None, name)  # not a canonical column (header resolution keeps those out)

    def _plain(self, name: str) -> Column | None:
        if name == "identifierValue":
            return Column(None, name, (REQUIRED,))
        if name == "identifierName":
            return Column(None, name, (cell_check(one_of(IDENTIFIER_NAMES), f"is not one of"
                                                  f" {listing(IDENTIFIER_NAMES)}"),), spelling(IDENTIFIER_NAMES))
        if name == "source":
            return Column(None, name, (cell_check(one_of(SOURCES), f"is not a source the API knows"
                                                  f" ({listing(SOURCES)})"),), spelling(SOURCES))
        if name == "accountId":
            return Column(None, name)
        if name == "loyaltyType":
            return Column("loyalty", name, (cell_check(one_of(LOYALTY_TYPES), "is not loyalty or non_loyalty"),),
                          spelling(LOYALTY_TYPES))
        if name in ("firstName", "lastName"):
            return Column("profile", name, (pa.Check(at_most(NAME_LIMIT), ignore_na=False,
                                                     error=f"is longer than {NAME_LIMIT} characters"),))
        return None

    def _custom_field(self, family: str, key: str, name: str) -> Column:
        kind = self.types.get(name.lower(), "string")
        if isinstance(kind, tuple):
            return Column(family, key, (cell_check(one_of(kind), f"is not one of {listing(kind)}"),), spelling(kind))
        typed = self._typed_fields()
        if kind not in typed:
            return Column(family, key)  # "string": text as it is
        parse, error = typed[kind]
        check = BOOLEAN_CHECK if kind == "bool" else cell_check(lambda v: parse(v) is not None, error)
        return Column(family, key, (check,), parse, kind if kind in ("date", "datetime") else None)

    def _typed_fields(self) -> dict[str, tuple[Convert, str]]:
        """The [types] a field can be given (cells.FIELD_TYPES but "string"): parser, error."""
        return {"int": (parse_int, "is not a whole number"),
                "float": (parse_float, "is not a number (e.g. 12.5)"),
                "bool": (parse_bool, ""),
                "date": (parse_date, self.date_error),
                "datetime": (self.datetimes.moment, self.date_time_error)}

    def _enrolment(self, attribute: str) -> Column:
        minimum = ENROLMENT_MINIMUMS.get(attribute)
        if minimum is not None:
            return Column("enrolment", attribute, (cell_check(whole_number_at_least(minimum),
                                                              f"must be a whole number ≥ {minimum}"),), parse_int)
        expiry = self.datetimes.expiry
        return Column("enrolment", attribute, (cell_check(lambda v: expiry(v) is not None, self.date_time_error),),
                      expiry, "datetime")

    def _channel(self, kind: str, attribute: str) -> Column:
        if attribute in ("primary", "verified"):
            return Column(f"channel:{kind}", attribute, (BOOLEAN_CHECK,), parse_bool)
        if attribute == "value":
            return Column(f"channel:{kind}", "value", _channel_value_checks(kind), holds=_holds(kind))
        # lastViewedDate and meta.<key> both live in the channel's meta, as the API's examples show.
        if attribute == "lastViewedDate":
            return Column(f"meta:{kind}", attribute, (cell_check(is_date_or_date_time, self.date_time_error),),
                          holds="datetime")
        return Column(f"meta:{kind}", attribute.partition(".")[2])  # meta.<key>: free text


def _holds(kind: str) -> str | None:
    return "mobile" if kind == "mobile" else None


def _identifier_checks(kind: str) -> tuple[pa.Check, ...]:
    return {"mobile": (MOBILE_CHECK,), "email": (EMAIL_CHECK,)}.get(kind, ())


def _channel_value_checks(kind: str) -> tuple[pa.Check, ...]:
    if kind == "mobilePush":
        return (pa.Check(matching(PUSH_TOKEN), ignore_na=False,
                         error="is not a push token (16 or more characters, no spaces)"),)
    return _identifier_checks(kind)
