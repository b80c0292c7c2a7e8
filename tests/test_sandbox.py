"""The sandbox server over real HTTP on 127.0.0.1, as the client will see it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
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
LOOKUP = "/v2/customers/lookup"
CUSTOMER_42 = 100_042


class Reply(NamedTuple):
    status: int
    body: object  # parsed JSON, else text
    headers: dict


def lookup(value: str = "919800000042", name: str = "mobile", source: str = "INSTORE",
           **extra: str) -> dict:
    return {"source": source, "identifierName": name, "identifierValue": value, **extra}


def settings(**overrides) -> SandboxSettings:
    return SandboxSettings(customers=1_000, **overrides)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        # aiohttp re-sends an idempotent PUT once when the server drops the connection;
        # switch that off (as aiohttp.test_utils does) so each test sees every drop.
        s._retry_connection = False
        yield s


@pytest.fixture
async def sb():
    async with Sandbox(settings()) as running:
        yield running


async def send(session, sb, body: object = None, params: dict | None = None,
               method: str = "PUT", path: str = LOOKUP, headers: dict | None = None,
               **kwargs) -> Reply:
    """One request; body is sent as JSON ({} for a PUT unless given)."""
    if body is None and method == "PUT" and "data" not in kwargs:
        body = {}
    headers = {"Authorization": BASIC} if headers is None else headers
    params = lookup() if params is None else params
    async with session.request(method, sb.url + path, params=params, json=body,
                               headers=headers, **kwargs) as r:
        text = await r.text()
        payload = orjson.loads(text) if r.content_type == "application/json" else text
        return Reply(r.status, payload, dict(r.headers))


def codes(reply: Reply) -> list[int]:
    return [error["code"] for error in reply.body["errors"]]


def channel(kind: str, value: str = "x") -> dict:
    return {"profiles": [{"commChannels": [{"type": kind, "value": value}]}]}


def identifier(kind: str, value: str) -> dict:
    return {"profiles": [{"identifiers": [{"type": kind, "value": value}]}]}


# --- authentication -------------------------------------------------------------------

def test_basic_auth_header_matches_documented_example():
    assert basic_auth_header("store.server", "server123") == (
        "Basic c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3")


async def test_basic_auth_accepts_the_till_and_rejects_others(session, sb):
    ok = await send(session, sb)
    wrong = await send(session, sb, headers={"Authorization": basic_auth_header("demo.till", "x")})
    missing = await send(session, sb, headers={})
    assert ok.status == 200
    for reply in (wrong, missing):
        assert reply.status == 401
        assert reply.body["warnings"] == [] and codes(reply) == [401]
    assert "Invalid credentials" in wrong.body["errors"][0]["message"]
    assert "Missing credentials" in missing.body["errors"][0]["message"]
    assert [r.credential for r in sb.state.requests] == ["demo.till", None, None]
    assert [r.outcome for r in sb.state.requests] == ["ok", "auth", "auth"]


async def test_oauth_token_is_issued_used_and_expires(session):
    async with Sandbox(settings(token_ttl_seconds=0.2)) as sb:
        issued = await send(session, sb, {"key": "demo-key", "secret": "demo-secret"},
                            method="POST", path="/v3/oauth/token/generate", params={})
        assert issued.status == 200 and issued.body["errors"] is None
        assert issued.body["data"]["ttlSeconds"] == 0.2
        token = {"X-CAP-API-OAUTH-TOKEN": issued.body["data"]["accessToken"]}
        assert (await send(session, sb, headers=token)).status == 200
        await asyncio.sleep(0.25)
        expired = await send(session, sb, headers=token)
        forged = await send(session, sb, headers={"X-CAP-API-OAUTH-TOKEN": "forged"})
    assert expired.status == 401 and "expired" in expired.body["errors"][0]["message"]
    assert forged.status == 401 and "Invalid OAuth token" in forged.body["errors"][0]["message"]
    assert [r.credential for r in sb.state.requests] == ["demo-key", "demo-key", None, None]


async def test_oauth_rejects_a_wrong_secret(session, sb):
    reply = await send(session, sb, {"key": "demo-key", "secret": "nope"}, method="POST",
                       path="/v3/oauth/token/generate", params={})
    assert reply.status == 401
    assert reply.body == {"data": None, "errors": [
        {"status": False, "code": 401, "message": "Invalid key or secret"}]}


async def test_token_ttl_is_an_integer_when_whole(session, sb):
    reply = await send(session, sb, {"key": "demo-key", "secret": "demo-secret"}, method="POST",
                       path="/v3/oauth/token/generate", params={})
    assert reply.body["data"]["ttlSeconds"] == 300
    assert isinstance(reply.body["data"]["ttlSeconds"], int)


# --- query and lookup -------------------------------------------------------------------

@pytest.mark.parametrize("params, code", [
    ({"source": "INSTORE", "identifierName": "mobile"}, 11013),
    ({"identifierName": "mobile", "identifierValue": "919800000042"}, 11013),
    (lookup(source="MYSPACE"), 8003),
    (lookup(name="phone"), 8013),
    (lookup(source="WECHAT"), 8045),
    (lookup("919899999999"), 8015),
    (lookup("nobody@example.com", name="email"), 8015),
])
async def test_query_errors_answer_with_their_codes(session, sb, params, code):
    reply = await send(session, sb, params=params)
    assert reply.status == 400
    assert reply.body["warnings"] == [] and codes(reply) == [code]
    assert sb.state.requests[-1].outcome == "business_error"


async def test_multi_account_source_with_account_id_is_accepted(session, sb):
    reply = await send(session, sb, params=lookup(source="WECHAT", accountId="wx-1"))
    assert reply.status == 200


@pytest.mark.parametrize("status", [200, 404])
async def test_business_error_status_is_configurable(session, status):
    async with Sandbox(settings(business_error_status=status)) as sb:
        reply = await send(session, sb, params=lookup("919899999999"))
    assert reply.status == status and codes(reply) == [8015]


async def test_wrong_content_type_is_415(session, sb):
    reply = await send(session, sb, data="{}", headers={"Authorization": BASIC,
                                                        "Content-Type": "text/plain"})
    assert reply.status == 415 and codes(reply) == [415]


async def test_update_by_id_and_get_lookup(session, sb):
    by_id = await send(session, sb, {"profiles": [{"firstName": "Asha"}]},
                       path=f"/v2/customers/{CUSTOMER_42}", params={"source": "INSTORE"})
    unknown = await send(session, sb, path="/v2/customers/99", params={"source": "INSTORE"})
    found = await send(session, sb, method="GET",
                       params=lookup("EXT00000042", name="externalId"))
    assert by_id.status == 200 and by_id.body["createdId"] == CUSTOMER_42
    assert unknown.status == 400 and codes(unknown) == [8015]
    assert found.body == {"entity": CUSTOMER_42, "warnings": []}
    assert sb.state.customer(CUSTOMER_42)["firstName"] == "Asha"


# --- bodies -----------------------------------------------------------------------------

FULL_BODY = {
    "loyaltyInfo": {"loyaltyType": "loyalty"},
    "profiles": [{
        "firstName": "Asha", "lastName": "R" * 120,
        "fields": {"preferred_language": "kn"},
        "identifiers": [{"type": "email", "value": "asha@example.com"}],
        "commChannels": [{"type": "email", "value": "asha@example.com", "primary": True,
                          "meta": {"residence": True}}],
    }],
    "extendedFields": {"city": "Mysuru", "gender": "Female"},
    "loyaltyProgramEnrollments": [{"programId": 699, "tierNumber": 2, "loyaltyPoints": 150}],
}


async def test_success_merges_the_body_into_the_customer(session, sb):
    reply = await send(session, sb, FULL_BODY)
    assert reply.status == 200
    assert reply.body == {"createdId": CUSTOMER_42, "warnings": [], "sideEffects": []}
    customer = sb.state.customer(CUSTOMER_42)
    assert customer["firstName"] == "Asha" and customer["lastName"] == "R" * 100
    assert customer["fields"] == {"preferred_language": "kn"}
    assert customer["extendedFields"] == {"city": "Mysuru", "gender": "Female"}
    assert customer["commChannels"][0]["value"] == "asha@example.com"
    assert [e["programId"] for e in customer["enrollments"]] == [699]
    await send(session, sb, channel("email", "b@x.in"))
    channels = sb.state.customer(CUSTOMER_42)["commChannels"]
    assert channels == [{"type": "email", "value": "b@x.in", "primary": True,
                         "meta": {"residence": True}}]
    assert sb.state.applied_count == 2


async def test_use_async_omits_side_effects(session, sb):
    reply = await send(session, sb, params=lookup(use_async="true"))
    assert reply.body == {"createdId": CUSTOMER_42, "warnings": []}


@pytest.mark.parametrize("body, source, code", [
    ({"loyaltyInfo": {"loyaltyType": "non_loyalty"}}, "INSTORE", 1046),
    ({"loyaltyInfo": {"loyaltyType": "vip"}}, "INSTORE", 10002),
    (channel("fax"), "INSTORE", 1101),
    (channel("mobilePush", "firebase-token"), "TMALL", 1101),
    ({"profiles": [{"fields": {"shoe_size": "9"}}]}, "INSTORE", 1017),
    (identifier("passport", "X1"), "INSTORE", 1042),
    (identifier("mobile", "98450-12345"), "INSTORE", 1042),
    (channel("mobile", "1234567"), "INSTORE", 1042),
    (channel("email", "asha.example.com"), "INSTORE", 1042),
    ({"loyaltyProgramEnrollments": [{"programId": 1}]}, "INSTORE", 1213),
    ({"loyaltyProgramEnrollments": [{"programId": 699}, {"programId": 699}]}, "INSTORE", 1216),
])
async def test_body_errors_reject_the_whole_update(session, sb, body, source, code):
    body = {**body, "extendedFields": {"city": "Pune"}}
    reply = await send(session, sb, body, params=lookup(source=source))
    assert reply.status == 400 and codes(reply) == [code]
    assert sb.state.customer(CUSTOMER_42)["extendedFields"] == {}
    assert not sb.state.requests[-1].applied


async def test_valid_values_pass(session, sb):
    body = {"profiles": [{"identifiers": [{"type": "mobile", "value": "919845012345"}],
                          "commChannels": [{"type": "mobilePush", "value": "token"}]}]}
    assert (await send(session, sb, body, params=lookup(source="MOBILE_APP", accountId="a"))
            ).status == 200


async def test_enrolling_again_is_1216(session, sb):
    enrol = {"loyaltyProgramEnrollments": [{"programId": 700}]}
    assert (await send(session, sb, enrol)).status == 200
    again = await send(session, sb, enrol)
    assert again.status == 400
    assert again.body["errors"] == [{"status": False, "code": 1216,
                                     "message": "Customer is already enrolled in program 700"}]


async def test_unconfigured_extended_field_is_dropped_with_warning(session, sb):
    reply = await send(session, sb, {"extendedFields": {"city": "Pune", "shoe": "9"}})
    assert reply.status == 200
    assert reply.body["warnings"] == [{"status": False, "code": 91015, "message":
                                       "Extended field 'shoe' is not configured for the org"}]
    assert sb.state.customer(CUSTOMER_42)["extendedFields"] == {"city": "Pune"}


@pytest.mark.parametrize("body", [[1, 2], {"profiles": {"firstName": "A"}},
                                  {"profiles": [{"commChannels": ["email"]}]}])
async def test_malformed_body_is_400_10002(session, sb, body):
    reply = await send(session, sb, body)
    assert reply.status == 400 and codes(reply) == [10002]


async def test_invalid_json_is_400_10002_and_recorded_as_none(session, sb):
    reply = await send(session, sb, data="{not json", headers={
        "Authorization": BASIC, "Content-Type": "application/json"})
    assert reply.status == 400 and codes(reply) == [10002]
    assert sb.state.requests[-1].body is None


# --- concurrency, latency and rate limits -----------------------------------------------

async def test_second_request_for_a_busy_customer_gets_521(session):
    async with Sandbox(settings(processing_seconds=0.2)) as sb:
        first, second, other = await asyncio.gather(
            send(session, sb), send(session, sb), send(session, sb, params=lookup("919800000007")))
        after = await send(session, sb)
    assert sorted([first.status, second.status]) == [200, 521]
    busy = first if first.status == 521 else second
    assert busy.body == {"warnings": [], "errors": [{
        "status": False, "code": 521,
        "message": "Multiple actions are running for the same customer"}]}
    assert other.status == 200 and after.status == 200


async def test_latency_delays_every_answer(session):
    async with Sandbox(settings(latency_seconds=0.1)) as sb:
        start = time.monotonic()
        await send(session, sb, headers={})
        assert time.monotonic() - start >= 0.1


async def test_rolling_rate_limit_is_strict_and_frees_slots(session):
    async with Sandbox(settings(rate_limit=RateLimit(5, window_seconds=0.5))) as sb:
        replies = [await send(session, sb) for _ in range(6)]
        await asyncio.sleep(max(0.0, sb.state.requests[0].started + 0.5 - time.monotonic()))
        later = await send(session, sb)
        stats = sb.state.stats()
    assert [r.status for r in replies] == [200] * 5 + [429]
    assert replies[5].headers["Retry-After"] == "1" and codes(replies[5]) == [429]
    assert later.status == 200
    admitted = [r.started for r in sb.state.requests if r.admitted]
    assert len(admitted) == 6 and max_in_window(admitted, 0.5) <= 5
    assert stats["max_in_window"] == {"demo.till": 5} and stats["statuses"]["429"] == 1


async def test_rate_limit_counts_each_credential_separately(session):
    limited = settings(rate_limit=RateLimit(1, window_seconds=60, retry_after=False))
    async with Sandbox(limited) as sb:
        token = (await send(session, sb, {"key": "demo-key", "secret": "demo-secret"},
                            method="POST", path="/v3/oauth/token/generate", params={})
                 ).body["data"]["accessToken"]
        basic = [await send(session, sb) for _ in range(2)]
        oauth = await send(session, sb, headers={"X-CAP-API-OAUTH-TOKEN": token})
    assert [r.status for r in basic] == [200, 429] and oauth.status == 200
    assert "Retry-After" not in basic[1].headers


def test_max_in_window_counts_the_busiest_half_open_window():
    assert max_in_window([], 1.0) == 0
    assert max_in_window([0.0, 0.5, 1.0, 1.4], 1.0) == 3  # (0.4, 1.4]
    assert max_in_window([2.0, 0.0, 1.0], 1.0) == 1  # a window excludes its left edge


# --- faults -----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_error_faults_answer_html_and_apply_nothing(session, status):
    async with Sandbox(settings(faults=Faults(**{f"error_{status}": 1.0}))) as sb:
        reply = await send(session, sb, {"profiles": [{"firstName": "Z"}]})
        assert reply.status == status
        assert reply.headers["Content-Type"].startswith("text/html")
        assert reply.body.startswith("<html>") and str(status) in reply.body
        assert sb.state.customer(CUSTOMER_42)["firstName"] == "First42"
        assert sb.state.requests[-1].outcome == f"fault_{status}"


async def test_drop_before_closes_without_applying(session):
    async with Sandbox(settings(faults=Faults(drop_before=1.0))) as sb:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await send(session, sb, {"profiles": [{"firstName": "Z"}]})
        assert sb.state.customer(CUSTOMER_42)["firstName"] == "First42"
    (record,) = sb.state.requests
    assert (record.status, record.applied, record.outcome) == (0, False, "drop_before")


async def test_drop_after_applies_then_closes(session):
    async with Sandbox(settings(faults=Faults(drop_after=1.0))) as sb:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await send(session, sb, {"profiles": [{"firstName": "Z"}]})
        assert sb.state.customer(CUSTOMER_42)["firstName"] == "Z"
    (record,) = sb.state.requests
    assert (record.status, record.applied, record.outcome) == (0, True, "drop_after")


async def test_slow_answer_times_the_client_out_but_applies(session):
    async with Sandbox(settings(faults=Faults(slow=1.0, slow_seconds=0.2))) as sb:
        with pytest.raises(asyncio.TimeoutError):
            await send(session, sb, {"profiles": [{"firstName": "Z"}]},
                       timeout=aiohttp.ClientTimeout(total=0.05))
        assert sb.state.customer(CUSTOMER_42)["firstName"] == "Z"
        (record,) = sb.state.requests
        assert (record.status, record.applied, record.outcome) == (200, True, "slow")


async def test_burst_429_ignores_the_rate_limit(session):
    async with Sandbox(settings(faults=Faults(burst_429=1.0))) as sb:
        reply = await send(session, sb)
    assert reply.status == 429 and "Retry-After" not in reply.headers
    assert sb.state.requests[0].outcome == "burst_429" and not sb.state.requests[0].admitted


async def test_faults_change_at_runtime_and_spare_the_token_route(session, sb):
    sb.state.faults = Faults(error_503=1.0)
    token = await send(session, sb, {"key": "demo-key", "secret": "demo-secret"},
                       method="POST", path="/v3/oauth/token/generate", params={})
    assert token.status == 200
    assert (await send(session, sb)).status == 503
    sb.state.faults = Faults()
    assert (await send(session, sb)).status == 200


async def test_fault_draws_follow_the_seed(session):
    async def statuses(seed: int) -> list[int]:
        async with Sandbox(settings(seed=seed, faults=Faults(error_503=0.5))) as sb:
            return [(await send(session, sb)).status for _ in range(20)]

    first = await statuses(7)
    assert first == await statuses(7)
    assert set(first) == {200, 503}


def test_faults_pick_in_field_order():
    faults = Faults(error_500=0.1, drop_after=0.2)
    assert [faults.pick(d) for d in (0.05, 0.1, 0.29, 0.31)] == [
        "error_500", "drop_after", "drop_after", None]


# --- record and customers ---------------------------------------------------------------

async def test_record_keeps_what_was_received(session, sb):
    before = time.monotonic()
    await send(session, sb, {"profiles": [{"firstName": "A"}]}, params=lookup(use_async="true"))
    await send(session, sb, params=lookup("919899999999"))
    first, second = sb.state.requests
    assert (first.seq, second.seq) == (1, 2) and before <= first.started <= second.started
    assert (first.method, first.path) == ("PUT", LOOKUP)
    assert first.query == lookup(use_async="true")
    assert first.headers["Authorization"] == BASIC
    assert first.body == {"profiles": [{"firstName": "A"}]}
    assert (first.customer_id, first.status, first.applied, first.admitted) == (
        CUSTOMER_42, 200, True, True)
    assert (second.customer_id, second.status, second.applied) == (None, 400, False)


async def test_record_can_be_switched_off_but_stats_remain(session):
    async with Sandbox(settings(record=False)) as sb:
        await send(session, sb)
        assert sb.state.requests == []
        assert sb.state.stats()["statuses"] == {"200": 1}


async def test_seeded_customers_are_lazy_and_deterministic(session):
    async with Sandbox(SandboxSettings(customers=1_000_000)) as sb:
        last = 999_999
        found = [await send(session, sb, method="GET", params=lookup(value, name))
                 for name, value in [("mobile", "919800999999"),
                                     ("email", f"customer{last}@example.com"),
                                     ("externalId", f"EXT{last:08d}")]]
        misses = [await send(session, sb, method="GET", params=lookup(value, name))
                  for name, value in [("mobile", "919801000000"),
                                      ("email", "customer007@example.com"),
                                      ("externalId", "EXT0000042")]]
        assert sb.state.customers.changed_count == 0
        customer = sb.state.customer(100_000 + last)
    assert {r.body["entity"] for r in found} == {100_000 + last}
    assert {codes(r)[0] for r in misses} == {8015}
    assert customer == {
        "id": 1_099_999, "mobile": "919800999999", "email": "customer999999@example.com",
        "externalId": "EXT00999999", "loyaltyType": "loyalty", "firstName": "First999999",
        "lastName": "Last999999", "fields": {}, "extendedFields": {}, "identifiers": [],
        "commChannels": [], "enrollments": []}


async def test_customers_load_from_csv(session, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("id,mobile,email,externalId,loyaltyType,firstName,lastName\n"
                    "7,919845012345,asha@example.com,,non_loyalty,Asha,\n")
    async with Sandbox(settings(customers_csv=str(path))) as sb:
        found = await send(session, sb, method="GET", params=lookup("asha@example.com", "email"))
        seeded = await send(session, sb, method="GET", params=lookup())
        upgrade = await send(session, sb, {"loyaltyInfo": {"loyaltyType": "loyalty"}},
                             params=lookup("919845012345"))
        customer = sb.state.customer(7)
    assert found.body["entity"] == 7 and codes(seeded) == [8015] and upgrade.status == 200
    assert (customer["loyaltyType"], customer["externalId"], customer["lastName"]) == (
        "loyalty", None, None)


# --- running it -------------------------------------------------------------------------

def http(url: str, data: bytes | None = None, method: str | None = None,
         headers: dict | None = None) -> tuple[int, object]:
    """A blocking request from outside the sandbox's event loop: (status, parsed JSON)."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, orjson.loads(e.read())


def test_sandbox_thread_serves_and_shares_its_record():
    with SandboxThread(settings()) as sb:
        status, body = http(f"{sb.url}{LOOKUP}?source=INSTORE&identifierName=mobile"
                            "&identifierValue=919800000042", b"{}", "PUT",
                            {"Authorization": BASIC, "Content-Type": "application/json"})
        assert (status, body["createdId"]) == (200, CUSTOMER_42)
        assert [r.status for r in sb.state.requests] == [200]
        url = sb.url
    with pytest.raises(OSError):
        http(url + "/__sandbox/stats")


def test_sandbox_thread_reports_a_failed_start():
    with SandboxThread(settings()) as running:
        port = int(running.url.rsplit(":", 1)[1])
        with pytest.raises(OSError), SandboxThread(settings(port=port)):
            pass


def test_admin_routes():
    with SandboxThread(settings(rate_limit=RateLimit(100, window_seconds=10))) as sb:
        for value in ("919800000001", "919899999999"):
            http(f"{sb.url}{LOOKUP}?source=INSTORE&identifierName=mobile&identifierValue={value}",
                 headers={"Authorization": BASIC})
        _, records = http(sb.url + "/__sandbox/requests?since=1")
        _, stats = http(sb.url + "/__sandbox/stats")
        _, faults = http(sb.url + "/__sandbox/faults", b'{"error_503": 0.25}')
        _, customer = http(sb.url + "/__sandbox/customers/100001")
        bad, _ = http(sb.url + "/__sandbox/faults", b'{"error_999": 1}')
        assert sb.state.faults == Faults(error_503=0.25)
    assert [(r["seq"], r["status"], r["outcome"]) for r in records] == [
        (2, 400, "business_error")]
    assert stats["statuses"] == {"200": 1, "400": 1} and stats["window_seconds"] == 10
    assert stats["max_in_window"] == {"demo.till": 2} and stats["applied"] == 0
    assert faults["error_503"] == 0.25 and customer["mobile"] == "919800000001"
    assert bad == 400


def test_serve_prints_the_banner_and_stops_on_sigterm():
    code = ("from batch_updater.sandbox import serve, SandboxSettings; "
            "serve(SandboxSettings(customers=10))")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          text=True) as process:
        try:
            banner = process.stdout.readline()
            url = banner.split()[3]
            assert "'demo.till'" in banner and "'demo-password'" in banner
            assert "'demo-key'" in banner and "'demo-secret'" in banner
            assert http(url + "/__sandbox/stats")[1]["requests"] == 0
            process.terminate()
            assert process.wait(timeout=5) == 0
        finally:
            process.kill()
