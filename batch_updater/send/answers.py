"""What an answer of the customer update API means: the single place that decides it,
by errors[].code first and HTTP status second (see `classify`)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from ..rows.payload import Payload

RETRYABLE_STATUSES = frozenset({408, 500, 502, 503, 504, 521})
# Codes that mean "try again later" whatever the HTTP status says.
RETRYABLE_CODES = frozenset({521})
# Without an errors[] code these say the request is wrong for every row, not for this one:
# 404 wrong resource (base_url), 405 wrong method, 415 wrong content type.
FATAL_STATUSES = frozenset({404, 405, 415})
ALREADY_ENROLLED_CODES = frozenset({"1216"})  # the sandbox's choice; real APIs are matched by message


class Verdict(str, Enum):
    SUCCESS = "success"
    BUSINESS = "business"      # the API refused this row: final
    AUTH = "auth"              # 401/403: credentials or access
    THROTTLED = "throttled"    # 429
    RETRY = "retry"            # 5xx, 521: the API is busy or failing
    NETWORK = "network"        # no answer: connection failed, dropped or timed out
    FATAL = "fatal"            # no row can succeed like this (wrong URL): stop the run


@dataclass(frozen=True, slots=True)
class Attempt:
    verdict: Verdict
    http_status: int | None = None
    code: str = ""
    message: str = ""
    customer_id: str = ""
    warnings: str = ""
    retry_after: str | None = None
    in_doubt: bool = False     # the request may have reached the API
    sent: bool = True          # False: no request went out (no OAuth token to send it with)
    renewed: bool = False      # a 401 came first (one more request): the token was dropped and renewed
    unreachable: bool = False  # no connection could be made (refused, DNS, TLS, connect timeout)


def classify(status: int, body: bytes, content_type: str = "", retry_after: str | None = None) -> Attempt:
    """What an answer means: errors[].code first, then the HTTP status.

    =====================================  ===========
    errors[] with 429 / 401, 403           THROTTLED / AUTH
    errors[] with 5xx, or code 521         RETRY
    errors[] otherwise (200, 400, 404...)  BUSINESS (final for this row)
    2xx JSON object without errors         SUCCESS
    2xx unreadable                         RETRY, in doubt (it may have been applied)
    429 / 401, 403                         THROTTLED / AUTH
    408, 5xx, 521 (HTML gateway pages)     RETRY
    404, 405, 415                          FATAL (wrong URL or request: no row can succeed)
    other 4xx                              BUSINESS
    =====================================  ===========
    """
    data = _json_object(body)
    errors = data.get("errors") if data else None
    warnings = _warnings(data.get("warnings") if data else None)
    if errors and isinstance(errors, list):
        code, message = _first_error(errors)
        if status == 429:
            return Attempt(Verdict.THROTTLED, status, code, message, retry_after=retry_after)
        if status in (401, 403):
            return Attempt(Verdict.AUTH, status, code, message)
        if status in RETRYABLE_STATUSES or status >= 500 or _as_int(code) in RETRYABLE_CODES:
            return Attempt(Verdict.RETRY, status, code, message, retry_after=retry_after)
        return Attempt(Verdict.BUSINESS, status, code, message, warnings=warnings)
    if 200 <= status < 300 and data is not None:
        created = data.get("createdId", data.get("entity", ""))
        return Attempt(Verdict.SUCCESS, status, customer_id=str(created or ""), warnings=warnings)
    message = summarise_body(status, body, content_type)
    if 200 <= status < 300:
        return Attempt(Verdict.RETRY, status, message=f"{message} (not the API's JSON answer:"
                       " the update may or may not have been applied)", in_doubt=True)
    if status == 429:
        return Attempt(Verdict.THROTTLED, status, message=message, retry_after=retry_after)
    if status in (401, 403):
        return Attempt(Verdict.AUTH, status, message=message)
    if status in RETRYABLE_STATUSES or status >= 500:
        return Attempt(Verdict.RETRY, status, message=message, retry_after=retry_after)
    if status in FATAL_STATUSES:
        return Attempt(Verdict.FATAL, status, message=message)
    return Attempt(Verdict.BUSINESS, status, message=message)


@dataclass(frozen=True)
class AnswerPolicy:
    """How the user's settings judge two kinds of answer ([api] fail_on_warnings, already_enrolled)."""

    fail_on_warnings: bool = False
    enrolled_is_success: bool = False   # already_enrolled = "success"

    def judged(self, success: Attempt) -> Attempt:
        """A success, or with fail_on_warnings and warnings, a refusal of the row (applied all the same)."""
        if not (self.fail_on_warnings and success.warnings):
            return success
        return Attempt(Verdict.BUSINESS, success.http_status, warning_codes(success.warnings)[0],
                       WARNED_PREFIX + success.warnings, success.customer_id, success.warnings)

    def without_enrolment(self, payload: Payload, attempt: Attempt, in_doubt: bool) -> tuple[Payload, str] | None:
        """An "already enrolled" refusal applied nothing of the row. When the enrolment
        counts as done (an earlier attempt whose answer was lost may have made it, or
        already_enrolled = "success"), the rest of the row is to be sent again without
        it: that payload, and the note its success carries. None: not this case."""
        if not (already_enrolled(payload, attempt) and (in_doubt or self.enrolled_is_success)):
            return None
        why = ("an earlier attempt whose answer was lost may have enrolled the customer" if in_doubt
               else 'already_enrolled = "success"')
        note = (f"{attempt.code or attempt.http_status}: {attempt.message} (counted as applied: {why};"
                " the rest of the row was sent without the enrolment)")
        body = {key: value for key, value in payload.body.items() if key != "loyaltyProgramEnrollments"}
        return payload._replace(body=body), note


WARNED_PREFIX = "applied, with warnings (fail_on_warnings): "


def warning_codes(warnings: str) -> list[str]:
    """The codes of a `_warnings` text ("91015: message | 91007: message"), in order."""
    return [part.split(":", 1)[0].strip() or "?" for part in warnings.split(" | ") if part.strip()]


def already_enrolled(payload: Payload, attempt: Attempt) -> bool:
    """The API refused an enrolment the customer already has (the real code is undocumented)."""
    return (attempt.verdict is Verdict.BUSINESS and "loyaltyProgramEnrollments" in payload.body
            and (attempt.code in ALREADY_ENROLLED_CODES or "already enrolled" in attempt.message.lower()))


def _json_object(body: bytes) -> dict | None:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _first_error(errors: list) -> tuple[str, str]:
    first = errors[0] if isinstance(errors[0], dict) else {}
    messages = [str(e.get("message", "")) for e in errors if isinstance(e, dict) and e.get("message")]
    return str(first.get("code", "")), " | ".join(messages)


def _warnings(warnings: Any) -> str:
    if not warnings or not isinstance(warnings, list):
        return ""
    parts = [f"{w.get('code', '')}: {w.get('message', '')}" if isinstance(w, dict) else str(w)
             for w in warnings]
    return " | ".join(parts)


def _as_int(code: str) -> int | None:
    try:
        return int(code)
    except (TypeError, ValueError):
        return None


def summarise_body(status: int, body: bytes, content_type: str) -> str:
    """One line for an answer without a JSON error: a gateway's HTML page, say."""
    text = body[:4096].decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    if title:
        text = title.group(1)
    else:
        text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(html.unescape(text).split())[:160]
    kind = content_type.split(";")[0] or "no content type"
    return f"HTTP {status} ({kind}){': ' + text if text else ''}"
