"""The answers the sandbox can give, decided before they are delivered (or not delivered,
when a fault drops the connection)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from .validation import Problem

# What real load balancers put in front of the API send: HTML, not JSON.
HTML_REASONS = {500: "Internal Server Error", 502: "Bad Gateway",
                503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


@dataclass(frozen=True)
class Answer:
    status: int  # 0: close the connection without answering
    outcome: str  # the record's short tag
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    applied: bool = False

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body,
                            content_type=self.content_type, headers=self.headers)


def json_answer(status: int, payload: object, outcome: str, applied: bool = False) -> Answer:
    return Answer(status, outcome, orjson.dumps(payload), applied=applied)


def error_answer(status: int, problems: list[Problem], outcome: str,
                 headers: dict[str, str] | None = None) -> Answer:
    payload = {"warnings": [], "errors": as_entries(problems)}
    return Answer(status, outcome, orjson.dumps(payload), headers=headers or {})


def as_entries(problems: list[Problem]) -> list[dict]:
    return [{"status": False, "code": code, "message": message} for code, message in problems]


def throttled(wait: float | None, outcome: str = "throttled") -> Answer:
    """429; with a Retry-After header when `wait` (seconds until a slot frees) is known."""
    headers = {"Retry-After": str(max(1, math.ceil(wait)))} if wait is not None else {}
    return error_answer(429, [(429, "Too many requests: rate limit exceeded")], outcome, headers)


def html_answer(status: int) -> Answer:
    title = f"{status} {HTML_REASONS[status]}"
    page = (f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1>"
            "</center><hr><center>nginx</center></body></html>")
    return Answer(status, f"fault_{status}", page.encode(), content_type="text/html")


def dropped(outcome: str, applied: bool = False) -> Answer:
    return Answer(0, outcome, applied=applied)
