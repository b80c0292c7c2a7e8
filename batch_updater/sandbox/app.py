"""The customer update and add APIs and the OAuth token route, as docs/api.md describes them.

Checks run in a fixed order so that tests can predict each answer. An update:
authentication (401) → injected faults, burst 429, rate limit (429) → Content-Type (415) →
query (11013, 8003, 8013, 8045) → customer lookup (8015, or 521 while an add of that
identifier runs) → customer busy (521) → processing time → body (see validation.py) →
apply → answer. An add (POST /v2/customers): the same up to Content-Type, with its own
rate limit → query (11013, 8003, 8045) → body shape (10002) → identifiers (8014, 1007) →
busy (521) → processing time → already exists (8006) → body → create → answer.
Business errors use `business_error_status`.

A customer stays busy until its handler has answered, latency and slow faults included;
GET lookups neither wait for nor hold a busy customer.
`drop_after` and `slow` change how the final answer is delivered, whatever it is.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import orjson
from aiohttp import web

from .admin import add_admin_routes
from .answers import Answer, as_entries, dropped, error_answer, html_answer, json_answer, throttled
from .auth import AuthError
from .customers import created, lookup_keys, merge, new_customer
from .record import RecordedRequest
from .settings import SandboxSettings
from .state import BusyKey, SandboxState
from .validation import (
    Problem,
    body_problems,
    create_identifier_problem,
    create_identifiers,
    extended_field_warnings,
    query_problem,
    shape_problem,
)

NOT_FOUND: Problem = (8015, "Customer not found for the given identifiers")
ALREADY_EXISTS: Problem = (8006, "Customer already exists")
# What an add's body is checked against: no loyalty type to keep (1046), no enrolment (1216).
NO_CUSTOMER = new_customer(0, None, None, None, "non_loyalty", None, None)
BUSY = error_answer(521, [(521, "Multiple actions are running for the same customer")], "busy")
NOT_JSON = error_answer(415, [(415, "Content-Type must be application/json")], "bad_request")
# Faults that answer in place of the API, before the rate limit counts the request.
EARLY_FAULTS = {
    "error_500": html_answer(500), "error_502": html_answer(502),
    "error_503": html_answer(503), "error_504": html_answer(504),
    "drop_before": dropped("drop_before"), "burst_429": throttled(None, "burst_429"),
}


def make_app(settings: SandboxSettings | None = None) -> web.Application:
    app = web.Application()
    with warnings.catch_warnings():  # a plain "state" key is part of the public interface
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["state"] = SandboxState(settings or SandboxSettings())
    app.router.add_post("/v3/oauth/token/generate", token_route)
    app.router.add_put("/v2/customers/lookup", customer_route)
    app.router.add_get("/v2/customers/lookup", customer_route)
    app.router.add_put(r"/v2/customers/{id:\d+}", customer_route)
    app.router.add_post("/v2/customers", create_route)
    add_admin_routes(app)
    return app


@dataclass
class Exchange:
    """One request on its way through the checks, with what its record needs."""

    request: web.Request
    seq: int
    started: float
    body: object = None
    credential: str | None = None
    customer_id: int | None = None
    fault: str | None = None
    admitted: bool = False
    budget: str = "update"  # the rate limit that counts it: "update", or "create" for adds

    def record(self, answer: Answer, delay: float = 0.0) -> RecordedRequest:
        r = self.request
        headers = {str(k): v for k, v in r.headers.items()}  # plain str keys serialize
        return RecordedRequest(self.seq, self.started, r.method, r.path, dict(r.query),
                               headers, self.body, self.credential, self.customer_id,
                               answer.status, answer.applied, answer.outcome, self.admitted,
                               time.monotonic() + delay, self.budget)


async def token_route(request: web.Request) -> web.StreamResponse:
    state: SandboxState = request.app["state"]
    ex = Exchange(request, state.next_seq(), time.monotonic())
    ex.body = await _read_json(request)
    body = ex.body if isinstance(ex.body, dict) else {}
    try:
        token = state.auth.issue(body.get("key"), body.get("secret"))
    except AuthError as e:
        payload = {"data": None, "errors": as_entries([(401, str(e))])}
        return await _finish(state, ex, json_answer(401, payload, "auth"))
    ex.credential = body["key"]
    ttl = state.auth.ttl
    data = {"accessToken": token, "ttlSeconds": ttl if ttl % 1 else int(ttl)}
    return await _finish(state, ex, json_answer(200, {"data": data, "errors": None}, "token"))


async def customer_route(request: web.Request) -> web.StreamResponse:
    state: SandboxState = request.app["state"]
    ex = Exchange(request, state.next_seq(), time.monotonic())
    early = _admit(state, ex)  # before any await: the rate limit sees arrival order
    ex.body = await _read_json(request)
    answer = early or _locate(state, ex)
    if answer is None and request.method == "GET":
        answer = json_answer(200, {"entity": ex.customer_id, "warnings": []}, "ok")
    if answer is not None:
        return await _finish(state, ex, answer)
    assert ex.customer_id is not None  # _locate answers unless it found the customer
    customer = state.customers.get(ex.customer_id)
    assert customer is not None  # customers are never removed once found
    return await _process(state, ex, {ex.customer_id, *lookup_keys(customer)},
                          lambda: _update(state, ex, customer))


async def create_route(request: web.Request) -> web.StreamResponse:
    state: SandboxState = request.app["state"]
    ex = Exchange(request, state.next_seq(), time.monotonic(), budget="create")
    early = _admit(state, ex)  # before any await: the rate limit sees arrival order
    ex.body = await _read_json(request)
    answer = early or _check_create(state, ex)
    if answer is not None:
        return await _finish(state, ex, answer)
    assert isinstance(ex.body, dict)  # _check_create answers any other body
    identifiers = create_identifiers(ex.body)
    return await _process(state, ex, set(identifiers), lambda: _create(state, ex, identifiers))


async def _process(state: SandboxState, ex: Exchange, keys: set[BusyKey],
                   apply: Callable[[], Answer]) -> web.StreamResponse:
    """Apply while holding the customer's keys; 521 if another request holds one."""
    if not state.hold(keys):
        return await _finish(state, ex, BUSY)
    try:
        await asyncio.sleep(state.settings.processing_seconds)
        return await _finish(state, ex, apply())
    finally:
        state.release(keys)


def _admit(state: SandboxState, ex: Exchange) -> Answer | None:
    """Authentication, injected faults and the rate limit of the request's budget; None
    lets the request through."""
    try:
        ex.credential = state.auth.credential(ex.request.headers)
    except AuthError as e:
        return error_answer(401, [(401, str(e))], "auth")
    ex.fault = state.draw_fault()
    if ex.fault in EARLY_FAULTS:
        return EARLY_FAULTS[ex.fault]
    wait = state.throttle(ex.credential, ex.started, ex.budget)
    if wait is not None:
        settings = state.settings
        rate_limit = settings.create_rate_limit if ex.budget == "create" else settings.rate_limit
        assert rate_limit is not None  # only a limiter that a rate limit configures makes waits
        return throttled(wait if rate_limit.retry_after else None)
    ex.admitted = True
    return None


def _locate(state: SandboxState, ex: Exchange) -> Answer | None:
    """Content type, query and customer lookup; None once ex.customer_id is known."""
    request = ex.request
    if request.method == "PUT" and request.content_type != "application/json":
        return NOT_JSON
    by_id = "id" in request.match_info
    problem = query_problem(request.query, lookup=not by_id)
    if problem is not None:
        return _business_error(state, [problem])
    if by_id:
        customer_id = int(request.match_info["id"])
        ex.customer_id = customer_id if customer_id in state.customers else None
        return _business_error(state, [NOT_FOUND]) if ex.customer_id is None else None
    key = (request.query["identifierName"], request.query["identifierValue"])
    ex.customer_id = state.customers.find(*key)
    if ex.customer_id is None and request.method == "PUT" and key in state.busy:
        return BUSY  # an add of this identifier is under way: an overlap, not "not found"
    return _business_error(state, [NOT_FOUND]) if ex.customer_id is None else None


def _check_create(state: SandboxState, ex: Exchange) -> Answer | None:
    """An add's content type, query, body shape and identifiers; None if they pass."""
    if ex.request.content_type != "application/json":
        return NOT_JSON
    problem = query_problem(ex.request.query, lookup=False)
    if problem is not None:
        return _business_error(state, [problem])
    malformed = shape_problem(ex.body)
    if malformed is not None:
        return _malformed(malformed)
    assert isinstance(ex.body, dict)  # a body of the documented shape is a JSON object
    problem = create_identifier_problem(ex.body)
    return _business_error(state, [problem]) if problem is not None else None


def _update(state: SandboxState, ex: Exchange, customer: dict) -> Answer:
    """Validate the body against the customer and apply it, all or nothing."""
    settings = state.settings
    malformed = shape_problem(ex.body)
    if malformed is not None:
        return _malformed(malformed)
    body = ex.body
    assert isinstance(body, dict)  # a body of the documented shape is a JSON object
    problems = list(body_problems(body, customer, ex.request.query["source"],
                                  settings.custom_fields, settings.programs))
    if problems:
        return _business_error(state, problems)
    warnings_ = extended_field_warnings(body, settings.extended_fields)
    state.customers.put(merge(customer, body, settings.extended_fields))
    return _applied(ex, customer["id"], warnings_, "ok")


def _create(state: SandboxState, ex: Exchange, identifiers: list[tuple[str, str]]) -> Answer:
    """Create the customer unless one of its identifiers is taken, all or nothing; the
    check and the creation run with no await between them, so two adds cannot both pass."""
    settings = state.settings
    body = ex.body
    assert isinstance(body, dict)  # _check_create passed it
    taken = [found for found in (state.customers.find(*i) for i in identifiers)
             if found is not None]
    if taken:
        ex.customer_id = taken[0]  # the record names the customer that has the identifier
        return _business_error(state, [ALREADY_EXISTS])
    problems = list(body_problems(body, NO_CUSTOMER, ex.request.query["source"],
                                  settings.custom_fields, settings.programs))
    if problems:
        return _business_error(state, problems)
    ex.customer_id = state.customers.new_id()
    state.customers.add(created(ex.customer_id, identifiers, body, settings.extended_fields))
    warnings_ = extended_field_warnings(body, settings.extended_fields)
    return _applied(ex, ex.customer_id, warnings_, "created")


def _applied(ex: Exchange, customer_id: int, warnings_: list[Problem], outcome: str) -> Answer:
    """The success answer of an update or an add: the customer's id and the warnings."""
    payload = {"createdId": customer_id, "warnings": as_entries(warnings_)}
    if ex.request.query.get("use_async", "").lower() != "true":
        payload["sideEffects"] = []
    return json_answer(200, payload, outcome, applied=True)


def _malformed(problem: str) -> Answer:
    return error_answer(400, [(10002, f"Invalid request body: {problem}")], "bad_request")


def _business_error(state: SandboxState, problems: list[Problem]) -> Answer:
    return error_answer(state.settings.business_error_status, problems, "business_error")


async def _finish(state: SandboxState, ex: Exchange, answer: Answer) -> web.StreamResponse:
    """Record the answer, then deliver it late, slowly or not at all as settings say."""
    if ex.fault == "drop_after":
        answer = dropped("drop_after", applied=answer.applied)
    elif ex.fault == "slow":
        answer = replace(answer, outcome="slow")
    delay = state.settings.latency_seconds
    if ex.fault == "slow":
        delay += state.faults.slow_seconds
    state.recorder.add(ex.record(answer, delay))
    if delay:
        await asyncio.sleep(delay)
    if answer.status == 0 and ex.request.transport is not None:
        ex.request.transport.close()  # the client sees the connection end without an answer
    return answer.response() if answer.status else web.Response()


async def _read_json(request: web.Request) -> object | None:
    raw = await request.read()
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
