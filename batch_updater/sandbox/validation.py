"""Checks of the lookup query and the update body, answered with Capillary's error codes.

Where Capillary's code is not public, the sandbox uses:
- 10002 ("update failed") for a body that is not a JSON object of the documented shape
  (sent with HTTP 400) and for a loyaltyType other than loyalty/non_loyalty (sent with the
  business error status);
- 1216 "Customer is already enrolled in program <id>" for a repeated enrolment;
- 1007 for an add without a mobile, email or externalId identifier (the code v1.1's
  customer/add documents for that).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

SOURCES = frozenset({"FACEBOOK", "WEB_ENGAGE", "WECHAT", "INSTORE", "MARTJACK", "TMALL",
                     "TAOBAO", "JD", "ECOMMERCE", "WEBSITE", "LINE", "MOBILE_APP"})
MULTI_ACCOUNT_SOURCES = frozenset({"WECHAT", "FACEBOOK", "MOBILE_APP", "LINE"})
IDENTIFIER_NAMES = ("mobile", "email", "externalId")
LOYALTY_TYPES = ("loyalty", "non_loyalty")
CHANNEL_TYPES = frozenset({"mobile", "email", "wechat", "ios", "android", "line", "mobilePush"})
PUSH_SOURCES = frozenset({"MOBILE_APP", "INSTORE", "MARTJACK", "ECOMMERCE", "WEBSITE"})
IDENTIFIER_TYPES = frozenset({"mobile", "email", "externalId", "wechat", "martjackId", "fbId",
                              "tmall_uname", "cuid", "ali_uname", "jd_uname", "vip_uname", "line"})
# One rule for every mobile, the client's too (rows/checks.py): ASCII digits with the country code.
MOBILE = re.compile(r"\d{8,15}", re.ASCII)

# The body's documented shape: a type, a dict of keys to shapes, or [item shape].
BODY_SHAPE = {
    "loyaltyInfo": dict,
    "profiles": [{"fields": dict, "identifiers": [dict], "commChannels": [dict]}],
    "extendedFields": dict,
    "loyaltyProgramEnrollments": [dict],
}

Problem = tuple[int, str]  # (error code, message)


def query_problem(query: Mapping[str, str], lookup: bool) -> Problem | None:
    """The first problem with a route's query string; only the lookup routes need
    identifierName and identifierValue (the by-id route and the add need only source)."""
    required = ("source", "identifierName", "identifierValue") if lookup else ("source",)
    missing = [name for name in required if not query.get(name)]
    if missing:
        return 11013, f"Missing required parameter(s): {', '.join(missing)}"
    source = query["source"]
    if source not in SOURCES:
        return 8003, f"Invalid source '{source}'"
    if lookup and query["identifierName"] not in IDENTIFIER_NAMES:
        return 8013, f"Invalid identifier name '{query['identifierName']}'"
    if source in MULTI_ACCOUNT_SOURCES and not query.get("accountId"):
        return 8045, f"accountId is required for source {source}"
    return None


def shape_problem(body: object, shape: object = BODY_SHAPE, path: str = "body") -> str | None:
    """Where the body departs from the documented shape, or None."""
    if isinstance(shape, list):
        if not isinstance(body, list):
            return f"{path} must be a JSON array"
        return next(filter(None, (shape_problem(item, shape[0], f"{path}[{i}]")
                                  for i, item in enumerate(body))), None)
    if not isinstance(body, dict):
        return f"{path} must be a JSON object"
    if isinstance(shape, dict):
        return next(filter(None, (shape_problem(body[key], sub, f"{path}.{key}")
                                  for key, sub in shape.items() if key in body)), None)
    return None


def create_identifiers(body: dict) -> list[tuple[str, str]]:
    """profiles[0]'s identifiers that find a customer (mobile, email, externalId), as
    (type, value) pairs: an add must carry one, and they are the new customer's keys."""
    identifiers = (body.get("profiles") or [{}])[0].get("identifiers", [])
    return [(i["type"], str(i["value"])) for i in identifiers
            if i.get("type") in IDENTIFIER_NAMES and i.get("value") not in (None, "")]


def create_identifier_problem(body: dict) -> Problem | None:
    """The add's own identifier rules, checked before the customer is looked for."""
    for identifier in (body.get("profiles") or [{}])[0].get("identifiers", []):
        value = identifier.get("value")
        if identifier.get("type") == "mobile" and not MOBILE.fullmatch(str(value)):
            return 8014, (f"Invalid mobile number '{value}': expected 8 to 15 digits"
                          " with the country code")
    if not create_identifiers(body):
        return 1007, "No identifier: an add needs a mobile, email or externalId identifier"
    return None


def body_problems(body: dict, customer: dict, source: str, custom_fields: tuple[str, ...],
                  programs: tuple[int, ...]) -> Iterator[Problem]:
    """Every business rule a well-shaped body breaks for this customer."""
    yield from _loyalty_problems(body.get("loyaltyInfo", {}), customer)
    for profile in body.get("profiles", []):
        yield from _channel_problems(profile.get("commChannels", []), source)
        yield from _identifier_problems(profile.get("identifiers", []))
        for name in profile.get("fields", {}):
            if name not in custom_fields:
                yield 1017, f"Invalid custom field '{name}'"
    yield from _enrollment_problems(body.get("loyaltyProgramEnrollments", []), customer, programs)


def extended_field_warnings(body: dict, extended_fields: tuple[str, ...]) -> list[Problem]:
    """Unconfigured extended fields are dropped with a warning; the update still succeeds."""
    return [(91015, f"Extended field '{name}' is not configured for the org")
            for name in body.get("extendedFields", {}) if name not in extended_fields]


def _loyalty_problems(loyalty_info: dict, customer: dict) -> Iterator[Problem]:
    wanted = loyalty_info.get("loyaltyType")
    if wanted is None:
        return
    if wanted not in LOYALTY_TYPES:
        yield 10002, f"Invalid loyaltyType '{wanted}': expected loyalty or non_loyalty"
    elif customer["loyaltyType"] == "loyalty" and wanted == "non_loyalty":
        yield 1046, "A loyalty customer cannot be changed to non_loyalty"


def _channel_problems(channels: list[dict], source: str) -> Iterator[Problem]:
    for channel in channels:
        kind = channel.get("type")
        if kind not in CHANNEL_TYPES:
            yield 1101, f"Invalid channel type '{kind}'"
        elif kind == "mobilePush" and source not in PUSH_SOURCES:
            yield 1101, f"Channel mobilePush is not allowed for source {source}"
        else:
            yield from _value_problems(kind, channel.get("value"))


def _identifier_problems(identifiers: list[dict]) -> Iterator[Problem]:
    for identifier in identifiers:
        kind = identifier.get("type")
        if kind not in IDENTIFIER_TYPES:
            yield 1042, f"Invalid identifier type '{kind}'"
        else:
            yield from _value_problems(kind, identifier.get("value"))


def _value_problems(kind: str, value: object) -> Iterator[Problem]:
    if kind == "mobile" and not MOBILE.fullmatch(str(value)):
        yield 1042, f"Invalid mobile '{value}': expected 8 to 15 digits"
    elif kind == "email" and "@" not in str(value):
        yield 1042, f"Invalid email '{value}'"


def _enrollment_problems(enrollments: list[dict], customer: dict,
                         programs: tuple[int, ...]) -> Iterator[Problem]:
    enrolled = {e.get("programId") for e in customer["enrollments"]}
    for enrollment in enrollments:
        program = enrollment.get("programId")
        if program not in programs:
            yield 1213, f"Invalid programId '{program}'"
        elif program in enrolled:
            yield 1216, f"Customer is already enrolled in program {program}"
        else:
            enrolled.add(program)
