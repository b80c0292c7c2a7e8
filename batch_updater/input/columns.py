"""Canonical column names (the API's own paths) and the resolution of a file's headers.

A header matches case-insensitively after trimming, first through the config's
[columns] renames, then against the canonical names. The report's own columns
(prefixed "_") are ignored, so an errors.csv can be fed back unchanged; so is a
column without a header (a trailing delimiter, an empty spreadsheet column) as long
as it holds no values: a value in it makes its row invalid (see prepare.py).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..errors import InputError

LOOKUP_COLUMNS = ("identifierValue", "identifierName", "source", "accountId")
PLAIN_COLUMNS = LOOKUP_COLUMNS + ("loyaltyType", "firstName", "lastName")
CHANNEL_TYPES = ("mobile", "email", "wechat", "ios", "android", "line", "mobilePush")
CHANNEL_ATTRIBUTES = ("value", "primary", "verified", "lastViewedDate")
IDENTIFIER_TYPES = ("mobile", "email", "externalId", "wechat", "martjackId", "fbId", "tmall_uname",
                    "cuid", "ali_uname", "jd_uname", "vip_uname", "line")
ENROLMENT_ATTRIBUTES = ("programId", "tierNumber", "loyaltyPoints", "tierExpiryDate", "pointsExpiryDate")
# The values the lookup and loyalty columns take (the API's vocabulary).
SOURCES = ("FACEBOOK", "WEB_ENGAGE", "WECHAT", "INSTORE", "MARTJACK", "TMALL", "TAOBAO",
           "JD", "ECOMMERCE", "WEBSITE", "LINE", "MOBILE_APP")
MULTI_ACCOUNT_SOURCES = ("WECHAT", "FACEBOOK", "MOBILE_APP", "LINE")
IDENTIFIER_NAMES = ("mobile", "email", "externalId")
LOYALTY_TYPES = ("loyalty", "non_loyalty")
REPORT_COLUMN_PREFIX = "_"


def _lower_map(names) -> dict[str, str]:
    return {name.lower(): name for name in names}


_PLAIN = _lower_map(PLAIN_COLUMNS)
_CHANNELS = _lower_map(CHANNEL_TYPES)
_CHANNEL_ATTRIBUTES = _lower_map(CHANNEL_ATTRIBUTES)
_IDENTIFIERS = _lower_map(IDENTIFIER_TYPES)
_ENROLMENT = _lower_map(ENROLMENT_ATTRIBUTES)
_FAMILIES = _lower_map(("fields", "extendedFields", "identifiers", "commChannels", "loyaltyProgramEnrollments"))


def canonical_name(name: str) -> str | None:
    """The canonical spelling of a column name, or None when it is not one."""
    key = name.strip()
    low = key.lower()
    if low in _PLAIN:
        return _PLAIN[low]
    head, _, rest = key.partition(".")
    head = head.lower()
    if head in ("fields", "extendedfields") and rest.strip():
        return ("fields." if head == "fields" else "extendedFields.") + rest.strip()
    if head == "identifiers" and rest.lower() in _IDENTIFIERS:
        return "identifiers." + _IDENTIFIERS[rest.lower()]
    if head == "loyaltyprogramenrollments" and rest.lower() in _ENROLMENT:
        return "loyaltyProgramEnrollments." + _ENROLMENT[rest.lower()]
    if head == "commchannels":
        return _channel_column(rest)
    return None


def _channel_column(rest: str) -> str | None:
    given, _, attribute = rest.partition(".")
    kind = _CHANNELS.get(given.lower())
    if kind is None:
        return None
    low = attribute.lower()
    if low in _CHANNEL_ATTRIBUTES:
        return f"commChannels.{kind}.{_CHANNEL_ATTRIBUTES[low]}"
    meta, _, meta_key = attribute.partition(".")
    if meta.lower() == "meta" and meta_key.strip():
        return f"commChannels.{kind}.meta.{meta_key.strip()}"
    return None


def _known_examples() -> list[str]:
    return (list(PLAIN_COLUMNS)
            + [f"commChannels.{t}.{a}" for t in CHANNEL_TYPES for a in CHANNEL_ATTRIBUTES]
            + [f"identifiers.{t}" for t in IDENTIFIER_TYPES]
            + [f"loyaltyProgramEnrollments.{a}" for a in ENROLMENT_ATTRIBUTES]
            + ["fields.<name>", "extendedFields.<name>", "commChannels.<type>.meta.<key>"])


@dataclass(frozen=True)
class ColumnPlan:
    """Which input column (by position) feeds which canonical column."""

    headers: tuple[str, ...]          # as in the file
    canonical: tuple[str | None, ...]  # per position; None = a report or unnamed column, ignored
    unnamed: tuple[int, ...] = ()     # positions without a header: must hold no values

    @property
    def used(self) -> list[tuple[int, str]]:
        return [(i, name) for i, name in enumerate(self.canonical) if name is not None]

    def position(self, canonical: str) -> int | None:
        for i, name in enumerate(self.canonical):
            if name == canonical:
                return i
        return None


def resolve_headers(headers: list[str], renames: dict[str, str], source: str) -> ColumnPlan:
    """Map a file's headers to canonical names, or raise InputError naming every bad one."""
    canonical: list[str | None] = []
    unnamed: list[int] = []
    problems: list[str] = []
    for position, header in enumerate(headers):
        key = str(header).strip()
        if key.startswith(REPORT_COLUMN_PREFIX) or not key:
            canonical.append(None)
            if not key:
                unnamed.append(position)
            continue
        target = renames.get(key.lower(), key)
        name = canonical_name(target)
        if name is None:
            problems.append(_unknown_message(key, None if target == key else target))
        elif name.startswith("commChannels.") and name.endswith(".lastViewedDate") \
                and name != "commChannels.mobilePush.lastViewedDate":
            problems.append(f"column '{key}': lastViewedDate is only for the mobilePush channel"
                            " (commChannels.mobilePush.lastViewedDate)")
        canonical.append(name)
    if any(p.startswith("unknown column") for p in problems):
        problems.append("rename unknown columns, map them in the config's [columns] table,"
                        " or start their names with _ to have them ignored")
    problems += _duplicate_messages(headers, canonical)
    if "identifierValue" not in canonical:
        problems.append("no identifierValue column (map your identifier column to it in the"
                        " config's [columns] table, e.g. \"Mobile No\" = \"identifierValue\")")
    if problems:
        raise InputError(f"{source}: header row: " + "; ".join(problems))
    return ColumnPlan(tuple(str(h) for h in headers), tuple(canonical), tuple(unnamed))


def _unknown_message(header: str, target: str | None) -> str:
    hint = _delimiter_hint(header) or _closest(header if target is None else target)
    family, _, rest = (header if target is None else target).strip().partition(".")
    kind = rest.partition(".")[0]
    if family.lower() == "commchannels" and kind and kind.lower() not in _CHANNELS:
        hint = f" ({kind} is not a channel type: {', '.join(CHANNEL_TYPES)})"
    elif family.lower() == "identifiers" and kind and kind.lower() not in _IDENTIFIERS:
        hint = f" ({kind} is not an identifier type: {', '.join(IDENTIFIER_TYPES)})"
    if target is not None:
        return (f"the config's [columns] maps '{header}' to '{target}', which is not a column"
                f" name{hint}: fix the [columns] table")
    return f"unknown column '{header}'{hint}"


def _delimiter_hint(header: str) -> str:
    """A header like 'identifierValue;firstName': the file's delimiter is another one."""
    for delimiter in (",", ";", "\t", "|", ":"):
        parts = header.split(delimiter)
        if len(parts) > 1 and any(canonical_name(part) for part in parts):
            shown = "\\t" if delimiter == "\t" else delimiter
            return f" (it holds '{shown}': if that is the file's delimiter, pass --delimiter '{shown}')"
    return ""


def _closest(name: str) -> str:
    fixed = _fixed_family(name)
    if fixed:
        return f" (did you mean {fixed}?)"
    known = {example.lower(): example for example in _known_examples()}
    squeezed = name.lower().replace(" ", "").replace("_", "")
    close = difflib.get_close_matches(squeezed, list(known), n=1, cutoff=0.6)
    return f" (did you mean {known[close[0]]}?)" if close else ""


def _fixed_family(name: str) -> str | None:
    """'feilds.city' -> 'fields.city': a misspelt family (the part before the first dot) with
    a valid rest, which whole-name matching misses (fields.<name> stands for any name)."""
    family, dot, rest = name.strip().partition(".")
    if not dot or family.lower() in _FAMILIES:
        return None
    squeezed = family.lower().replace(" ", "").replace("_", "")
    close = difflib.get_close_matches(squeezed, list(_FAMILIES), n=1, cutoff=0.7)
    return canonical_name(f"{_FAMILIES[close[0]]}.{rest}") if close else None


def _duplicate_messages(headers: list[str], canonical: list[str | None]) -> list[str]:
    seen: dict[str, str] = {}
    problems = []
    for header, name in zip(headers, canonical):
        if name is None:
            continue
        if name in seen:
            problems.append(f"columns '{seen[name]}' and '{header}' both mean {name}")
        else:
            seen[name] = str(header)
    return problems
