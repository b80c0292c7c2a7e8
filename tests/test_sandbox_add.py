"""The sandbox's Add Customer API (POST /v2/customers) over real HTTP on 127.0.0.1: what an
upsert client will see when it adds the rows whose update answered 8015."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import NamedTuple

import aiohttp
import orjson
import pytest

from batch_updater.sandbox import (
    Faults,
    RateLimit,
    Sandbox,
    SandboxSettings,
    SandboxThread,
    basic_auth_header,
    max_in_window,
)

BASIC = basic_auth_header("demo.till", "demo-password")
ADD = "/v2/customers"
LOOKUP = "/v2/customers/lookup"
NEW_MOBILE = "919811111111"  # not one of the 1,000 seeded customers (9198 + 00000000..999)
FIRST_NEW_ID = 101_000  # seeded ids are 100000 + i, so the first add gets 100000 + 1000
CUSTOMER_42 = 100_042


class Reply(NamedTuple):
    status: int
    body: object  # parsed JSON, else text
    headers: dict


def settings(**overrides) -> SandboxSettings:
    return SandboxSettings(customers=1_000, **overrides)


def person(*identifiers: tuple[str, str], **profile) -> dict:
    """An add body whose profiles[0] carries these (type, value) identifiers."""
    ids = [{"type": kind, "value": value} for kind, value in identifiers]
    return {"profiles": [{"identifiers": ids, **profile}]}


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        s._retry_connection = False  # see every dropped connection (tests/test_sandbox.py)
        yield s


@pytest.fixture
async def sb():
    async with Sandbox(settings()) as running:
        yield running


async def add(session, sb, body: object, source: str = "INSTORE", headers: dict | None = None,
              **kwargs) -> Reply:
    """POST /v2/customers?source=...; a `params` keyword replaces the whole query."""
    params = kwargs.pop("params", {"source": source})
    return await request(session, sb, "POST", ADD, params, body, headers, **kwargs)


async def update(session, sb, value: str, body: object = None, name: str = "mobile",
                 method: str = "PUT") -> Reply:
    params = {"source": "INSTORE", "identifierName": name, "identifierValue": value}
    return await request(session, sb, method, LOOKUP, params,
                         {} if body is None and method == "PUT" else body)


async def request(session, sb, method: str, path: str, params: dict, body: object,
                  headers: dict | None = None, **kwargs) -> Reply:
    headers = {"Authorization": BASIC} if headers is None else headers
    async with session.request(method, sb.url + path, params=params, json=body,
                               headers=headers, **kwargs) as r:
        text = await r.text()
        payload = orjson.loads(text) if r.content_type == "application/json" else text
        return Reply(r.status, payload, dict(r.headers))


def codes(reply: Reply) -> list[int]:
    return [error["code"] for error in reply.body["errors"]]


# --- adding, then finding -----------------------------------------------------------------

async def test_an_added_customer_is_found_by_each_identifier(session, sb):
    body = person(("mobile", NEW_MOBILE), ("email", "new@example.com"), ("externalId", "X-1"),
                  firstName="Asha", fields={"preferred_language": "kn"},
                  commChannels=[{"type": "email", "value": "new@example.com"}])
    created = await add(session, sb, {**body, "loyaltyInfo": {"loyaltyType": "non_loyalty"},
                                      "extendedFields": {"city": "Pune"},
                                      "loyaltyProgramEnrollments": [{"programId": 699}]})
    assert created.status == 200
    assert created.body == {"createdId": FIRST_NEW_ID, "warnings": [], "sideEffects": []}

    updated = await update(session, sb, NEW_MOBILE, {"profiles": [{"lastName": "Rao"}]})
    by_email = await update(session, sb, "new@example.com", name="email", method="GET")
    by_external = await update(session, sb, "X-1", name="externalId", method="GET")
    assert updated.status == 200 and updated.body["createdId"] == FIRST_NEW_ID
    assert by_email.body["entity"] == by_external.body["entity"] == FIRST_NEW_ID
    customer = sb.state.customer(FIRST_NEW_ID)
    assert (customer["mobile"], customer["email"], customer["externalId"]) == (
        NEW_MOBILE, "new@example.com", "X-1")
    assert (customer["firstName"], customer["lastName"], customer["loyaltyType"]) == (
        "Asha", "Rao", "non_loyalty")
    assert customer["fields"] == {"preferred_language": "kn"}
    assert customer["extendedFields"] == {"city": "Pune"}
    assert [e["programId"] for e in customer["enrollments"]] == [699]
    assert len(customer["identifiers"]) == 3 and customer["commChannels"][0]["type"] == "email"

    second = await add(session, sb, person(("email", "other@example.com")))
    assert second.body["createdId"] == FIRST_NEW_ID + 1  # ids keep counting up
    assert sb.state.customer(FIRST_NEW_ID + 1)["loyaltyType"] == "loyalty"  # the default


async def test_added_ids_follow_the_csv_customers(session, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("id,mobile,email,externalId,loyaltyType,firstName,lastName\n"
                    "7,919845012345,,,,,\n")
    async with Sandbox(settings(customers_csv=str(path))) as sb:
        reply = await add(session, sb, person(("mobile", NEW_MOBILE)))
    assert reply.body["createdId"] == 8


async def test_use_async_omits_side_effects(session, sb):
    reply = await add(session, sb, person(("mobile", NEW_MOBILE)),
                      params={"source": "INSTORE", "use_async": "true"})
    assert reply.body == {"createdId": FIRST_NEW_ID, "warnings": []}


async def test_oauth_token_and_multi_account_source_are_accepted(session, sb):
    token = (await request(session, sb, "POST", "/v3/oauth/token/generate", {},
                           {"key": "demo-key", "secret": "demo-secret"})).body["data"]["accessToken"]
    reply = await add(session, sb, person(("mobile", NEW_MOBILE)),
                      params={"source": "WECHAT", "accountId": "wx-1"},
                      headers={"X-CAP-API-OAUTH-TOKEN": token})
    assert reply.status == 200 and sb.state.requests[-1].credential == "demo-key"


# --- already exists -------------------------------------------------------------------------

@pytest.mark.parametrize("identifiers", [
    [("mobile", "919800000042")],
    [("email", "customer42@example.com")],
    [("mobile", NEW_MOBILE), ("externalId", "EXT00000042")],  # one taken identifier is enough
])
async def test_an_identifier_of_an_existing_customer_is_8006(session, sb, identifiers):
    reply = await add(session, sb, person(*identifiers, firstName="Z"))
    assert reply.status == 400
    assert reply.body == {"warnings": [], "errors": [
        {"status": False, "code": 8006, "message": "Customer already exists"}]}
    record = sb.state.requests[-1]
    assert (record.customer_id, record.applied, record.outcome) == (
        CUSTOMER_42, False, "business_error")
    assert sb.state.customer(CUSTOMER_42)["firstName"] == "First42"
    assert codes(await update(session, sb, NEW_MOBILE)) == [8015]  # nothing was created


async def test_adding_the_same_customer_twice_is_8006_with_the_business_status(session):
    async with Sandbox(settings(business_error_status=200)) as sb:
        first = await add(session, sb, person(("email", "new@example.com")))
        again = await add(session, sb, person(("email", "new@example.com")))
    assert first.status == 200 and again.status == 200 and codes(again) == [8006]
    assert sb.state.requests[-1].customer_id == first.body["createdId"]


# --- identifiers and other body rules ---------------------------------------------------------

@pytest.mark.parametrize("mobile", ["98450-12345", "+919845012345", "1234567", "9" * 16,
                                    "\u0669\u0661\u0669\u0668\u0664\u0665\u0660\u0661\u0662",
                                    ""])
async def test_a_mobile_that_is_not_ascii_digits_with_country_code_is_8014(session, sb, mobile):
    reply = await add(session, sb, person(("email", "new@example.com"), ("mobile", mobile)))
    assert reply.status == 400 and codes(reply) == [8014]
    assert reply.body["errors"][0]["message"].startswith("Invalid mobile number")
    assert sb.state.customers.changed_count == 0


async def test_the_update_keeps_the_same_mobile_rule(session, sb):
    arabic_indic = "\u0669\u0661\u0669\u0668\u0664\u0665\u0660\u0661\u0662"
    reply = await update(session, sb, "919800000042", person(("mobile", arabic_indic)))
    assert reply.status == 400 and codes(reply) == [1042]


@pytest.mark.parametrize("body", [
    {}, {"profiles": []}, {"profiles": [{"firstName": "A"}]},
    person(("wechat", "wx-user")), person(("email", "")),
    {"extendedFields": {"city": "Pune"}},
])
async def test_an_add_without_mobile_email_or_external_id_is_1007(session, sb, body):
    reply = await add(session, sb, body)
    assert reply.status == 400 and codes(reply) == [1007]


@pytest.mark.parametrize("extra, code", [
    ({"loyaltyInfo": {"loyaltyType": "vip"}}, 10002),
    ({"profiles": [{"identifiers": [{"type": "mobile", "value": NEW_MOBILE}],
                    "fields": {"shoe_size": "9"}}]}, 1017),
    ({"profiles": [{"identifiers": [{"type": "mobile", "value": NEW_MOBILE}],
                    "commChannels": [{"type": "fax", "value": "x"}]}]}, 1101),
    ({"profiles": [{"identifiers": [{"type": "mobile", "value": NEW_MOBILE},
                                    {"type": "email", "value": "no-at-sign"}]}]}, 1042),
    ({"loyaltyProgramEnrollments": [{"programId": 1}]}, 1213),
    ({"loyaltyProgramEnrollments": [{"programId": 699}, {"programId": 699}]}, 1216),
])
async def test_the_updates_body_rules_reject_the_whole_add(session, sb, extra, code):
    reply = await add(session, sb, {**person(("mobile", NEW_MOBILE)), **extra})
    assert reply.status == 400 and codes(reply) == [code]
    assert codes(await update(session, sb, NEW_MOBILE)) == [8015]


async def test_non_loyalty_is_allowed_for_a_new_customer(session, sb):
    reply = await add(session, sb, {**person(("mobile", NEW_MOBILE)),
                                    "loyaltyInfo": {"loyaltyType": "non_loyalty"}})
    assert reply.status == 200  # no loyalty customer to protect from 1046 yet


async def test_unconfigured_extended_field_is_dropped_with_warning_91015(session, sb):
    reply = await add(session, sb, {**person(("mobile", NEW_MOBILE)),
                                    "extendedFields": {"city": "Pune", "shoe": "9"}})
    assert reply.status == 200 and reply.body["createdId"] == FIRST_NEW_ID
    assert reply.body["warnings"] == [{"status": False, "code": 91015, "message":
                                       "Extended field 'shoe' is not configured for the org"}]
    assert sb.state.customer(FIRST_NEW_ID)["extendedFields"] == {"city": "Pune"}


# --- admission: auth, query, content type, shape ----------------------------------------------

@pytest.mark.parametrize("params, code", [
    ({}, 11013), ({"source": "MYSPACE"}, 8003), ({"source": "WECHAT"}, 8045),
])
async def test_query_errors_answer_with_their_codes(session, sb, params, code):
    reply = await add(session, sb, person(("mobile", NEW_MOBILE)), params=params)
    assert reply.status == 400 and codes(reply) == [code]


async def test_auth_content_type_and_shape_come_first(session, sb):
    wrong = await add(session, sb, person(("mobile", NEW_MOBILE)), headers={})
    text = await add(session, sb, None, data="{}", headers={"Authorization": BASIC,
                                                           "Content-Type": "text/plain"})
    shape = await add(session, sb, {"profiles": {"identifiers": []}})
    not_json = await add(session, sb, None, data="{nope", headers={
        "Authorization": BASIC, "Content-Type": "application/json"})
    assert (wrong.status, codes(wrong)) == (401, [401])
    assert (text.status, codes(text)) == (415, [415])
    assert (shape.status, codes(shape)) == (400, [10002])
    assert (not_json.status, codes(not_json)) == (400, [10002])
    assert sb.state.customers.changed_count == 0


# --- one request per customer at a time ---------------------------------------------------------

async def test_an_update_during_an_add_of_its_identifier_is_521(session):
    async with Sandbox(settings(processing_seconds=0.2)) as sb:
        adding = asyncio.create_task(add(session, sb, person(("mobile", NEW_MOBILE))))
        await asyncio.sleep(0.05)
        during = await update(session, sb, NEW_MOBILE)
        looked_up = await update(session, sb, NEW_MOBILE, method="GET")  # GET neither waits nor holds
        added = await adding
        after = await update(session, sb, NEW_MOBILE)
    assert during.status == 521 and codes(during) == [521]
    assert codes(looked_up) == [8015]
    assert added.status == 200 and after.status == 200
    assert [r.outcome for r in sb.state.requests] == ["busy", "business_error", "created", "ok"]


async def test_an_add_during_an_update_of_that_customer_is_521(session):
    async with Sandbox(settings(processing_seconds=0.2)) as sb:
        updating = asyncio.create_task(update(session, sb, "919800000042"))
        await asyncio.sleep(0.05)
        during = await add(session, sb, person(("mobile", NEW_MOBILE),
                                               ("email", "customer42@example.com")))
        assert (await updating).status == 200
        after = await add(session, sb, person(("mobile", NEW_MOBILE),
                                              ("email", "customer42@example.com")))
    assert during.status == 521 and codes(after) == [8006]
    assert not sb.state.busy


async def test_two_adds_of_one_identifier_overlapping_get_one_521(session):
    async with Sandbox(settings(processing_seconds=0.2)) as sb:
        first = asyncio.create_task(add(session, sb, person(("email", "new@example.com"))))
        await asyncio.sleep(0.05)
        second = await add(session, sb, person(("mobile", NEW_MOBILE), ("email", "new@example.com")))
        other = await add(session, sb, person(("email", "someone@example.com")))
        assert (await first).status == 200
        not_added = await update(session, sb, NEW_MOBILE)
    assert second.status == 521 and other.status == 200
    assert codes(not_added) == [8015]  # the refused add created nothing


# --- rate limits: two budgets -----------------------------------------------------------------

async def test_the_add_limit_throttles_adds_while_updates_pass(session):
    limits = settings(rate_limit=RateLimit(2, window_seconds=60),
                      create_rate_limit=RateLimit(3, window_seconds=0.5))
    async with Sandbox(limits) as sb:
        adds = [await add(session, sb, person(("mobile", f"91981111111{i}"))) for i in range(4)]
        updates = [await update(session, sb, f"91980000000{i}") for i in range(3)]
        first_add = next(r for r in sb.state.requests if r.method == "POST")
        await asyncio.sleep(max(0.0, first_add.started + 0.5 - time.monotonic()))
        later = await add(session, sb, person(("mobile", "919822222222")))
        stats = sb.state.stats()
    assert [r.status for r in adds] == [200, 200, 200, 429]
    assert adds[3].headers["Retry-After"] == "1" and codes(adds[3]) == [429]
    assert [r.status for r in updates] == [200, 200, 429]  # adds took none of its 2
    assert later.status == 200  # the add window rolled on
    posts = [r for r in sb.state.requests if r.method == "POST"]
    assert [r.budget for r in posts] == ["create"] * 5
    assert {r.budget for r in sb.state.requests if r.method == "PUT"} == {"update"}
    assert max_in_window([r.started for r in posts if r.admitted], 0.5) <= 3
    assert stats["max_in_window"] == {"demo.till": 2} and stats["window_seconds"] == 60
    assert stats["create_max_in_window"] == {"demo.till": 3}
    assert stats["create_window_seconds"] == 0.5


async def test_the_update_limit_throttles_updates_while_adds_pass(session):
    limits = settings(rate_limit=RateLimit(1, window_seconds=60, retry_after=False))
    async with Sandbox(limits) as sb:
        updates = [await update(session, sb, "919800000042") for _ in range(2)]
        adds = [await add(session, sb, person(("mobile", f"91981111111{i}"))) for i in range(5)]
    assert [r.status for r in updates] == [200, 429] and "Retry-After" not in updates[1].headers
    assert [r.status for r in adds] == [200] * 5  # no create_rate_limit: adds are unlimited


# --- faults -----------------------------------------------------------------------------------

async def test_drop_after_creates_the_customer_then_closes(session):
    async with Sandbox(settings(faults=Faults(drop_after=1.0))) as sb:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await add(session, sb, person(("mobile", NEW_MOBILE)))
        (record,) = sb.state.requests
        sb.state.faults = Faults()
        found = await update(session, sb, NEW_MOBILE, method="GET")
        again = await add(session, sb, person(("mobile", NEW_MOBILE)))
    assert (record.status, record.applied, record.outcome, record.customer_id) == (
        0, True, "drop_after", FIRST_NEW_ID)
    assert found.body["entity"] == FIRST_NEW_ID and codes(again) == [8006]


@pytest.mark.parametrize("fault, status", [("drop_before", 0), ("error_503", 503),
                                           ("burst_429", 429)])
async def test_faults_before_applying_create_nothing(session, fault, status):
    async with Sandbox(settings(faults=Faults(**{fault: 1.0}))) as sb:
        try:
            reply = await add(session, sb, person(("mobile", NEW_MOBILE)))
            assert reply.status == status
        except aiohttp.ServerDisconnectedError:
            assert status == 0
        (record,) = sb.state.requests
        assert (record.status, record.applied, record.outcome) == (
            status, False, fault if status != 503 else "fault_503")
        assert sb.state.customers.changed_count == 0


# --- the record ---------------------------------------------------------------------------------

async def test_the_record_holds_the_posts_apart_from_the_updates(session, sb):
    before = time.monotonic()
    body = person(("mobile", NEW_MOBILE))
    await add(session, sb, body)
    await add(session, sb, body)
    await update(session, sb, NEW_MOBILE)
    posts = [r for r in sb.state.requests if (r.method, r.path) == ("POST", ADD)]
    puts = [r for r in sb.state.requests if r.method == "PUT"]
    assert len(posts) == 2 and len(puts) == 1
    first, second = posts
    assert before <= first.started <= first.answered <= second.started
    assert first.query == {"source": "INSTORE"} and first.body == body
    assert (first.status, first.applied, first.outcome, first.customer_id, first.admitted) == (
        200, True, "created", FIRST_NEW_ID, True)
    assert (second.status, second.outcome) == (400, "business_error")
    assert sb.state.applied_count == 2 and sb.state.stats()["outcomes"] == {
        "business_error": 1, "created": 1, "ok": 1}


def test_the_admin_record_shows_the_budget():
    with SandboxThread(settings()) as sb:
        request_ = urllib.request.Request(
            f"{sb.url}{ADD}?source=INSTORE", data=orjson.dumps(person(("mobile", NEW_MOBILE))),
            method="POST", headers={"Authorization": BASIC, "Content-Type": "application/json"})
        with urllib.request.urlopen(request_, timeout=5) as r:
            assert orjson.loads(r.read())["createdId"] == FIRST_NEW_ID
        with urllib.request.urlopen(sb.url + "/__sandbox/requests", timeout=5) as r:
            (record,) = orjson.loads(r.read())
        with urllib.request.urlopen(f"{sb.url}/__sandbox/customers/{FIRST_NEW_ID}", timeout=5) as r:
            customer = orjson.loads(r.read())
    assert (record["method"], record["path"], record["budget"], record["status"]) == (
        "POST", ADD, "create", 200)
    assert customer["mobile"] == NEW_MOBILE
