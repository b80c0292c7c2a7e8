"""The client: how every kind of answer is classified, OAuth renewal, in-doubt detection."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest
from conftest import mobile

from batch_updater.config import load_config
from batch_updater.errors import RunAborted
from batch_updater.rows.payload import Lookup, Payload
from batch_updater.sandbox import Faults, Sandbox, SandboxSettings
from batch_updater.send.answers import Attempt, Verdict, classify, summarise_body
from batch_updater.send.client import ApiClient, OAuthToken, basic_authorization


def body(**payload) -> bytes:
    return orjson.dumps(payload)


def errors(*codes: int, message: str = "refused") -> bytes:
    return body(warnings=[], errors=[{"status": False, "code": c, "message": f"{message} {c}"} for c in codes])


def gateway_page(status: int, reason: str) -> bytes:
    return (f"<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}"
            "</h1></center><hr><center>nginx</center></body></html>").encode()


HTML = "text/html"
JSON = "application/json"

# status, body, content type, Retry-After -> verdict, code, in doubt
CASES = [
    pytest.param(200, body(createdId=342963216, warnings=[], sideEffects=[]), JSON, None,
                 Verdict.SUCCESS, "", False, id="200"),
    pytest.param(200, errors(8015), JSON, None, Verdict.BUSINESS, "8015", False, id="200+errors"),
    pytest.param(400, errors(8015, 1017), JSON, None, Verdict.BUSINESS, "8015", False, id="400+codes"),
    pytest.param(400, errors(1046), JSON, None, Verdict.BUSINESS, "1046", False, id="400+1046"),
    pytest.param(404, errors(8015), JSON, None, Verdict.BUSINESS, "8015", False, id="404+code"),
    pytest.param(404, b"<html><title>404 Not Found</title></html>", HTML, None,
                 Verdict.FATAL, "", False, id="404-html"),
    pytest.param(401, errors(401), JSON, None, Verdict.AUTH, "401", False, id="401"),
    pytest.param(403, gateway_page(403, "Forbidden"), HTML, None, Verdict.AUTH, "", False, id="403-html"),
    pytest.param(415, errors(415), JSON, None, Verdict.BUSINESS, "415", False, id="415+code"),
    pytest.param(415, b"", "", None, Verdict.FATAL, "", False, id="415-empty"),
    pytest.param(429, errors(429), JSON, "7", Verdict.THROTTLED, "429", False, id="429+retry-after"),
    pytest.param(429, b"Too Many Requests", "text/plain", None, Verdict.THROTTLED, "", False,
                 id="429-no-retry-after"),
    pytest.param(500, gateway_page(500, "Internal Server Error"), HTML, None, Verdict.RETRY, "", False,
                 id="500-html"),
    pytest.param(502, gateway_page(502, "Bad Gateway"), HTML, None, Verdict.RETRY, "", False, id="502-html"),
    pytest.param(503, gateway_page(503, "Service Temporarily Unavailable"), HTML, "30", Verdict.RETRY, "",
                 False, id="503-html"),
    pytest.param(504, gateway_page(504, "Gateway Time-out"), HTML, None, Verdict.RETRY, "", False,
                 id="504-html"),
    pytest.param(500, errors(10002), JSON, None, Verdict.RETRY, "10002", False, id="500+code"),
    pytest.param(521, errors(521), JSON, None, Verdict.RETRY, "521", False, id="521"),
    pytest.param(400, errors(521), JSON, None, Verdict.RETRY, "521", False, id="400+code-521"),
    pytest.param(200, b"<html><body>maintenance</body></html>", HTML, None, Verdict.RETRY, "", True,
                 id="200-non-json"),
    pytest.param(200, b"[1, 2]", JSON, None, Verdict.RETRY, "", True, id="200-json-array"),
    pytest.param(400, b"Bad Request", "text/plain", None, Verdict.BUSINESS, "", False, id="400-non-json"),
    pytest.param(502, b"\xff\xfe garbage \x00", "application/octet-stream", None, Verdict.RETRY, "", False,
                 id="502-binary"),
]


@pytest.mark.parametrize("status, raw, content_type, retry_after, verdict, code, in_doubt", CASES)
def test_classify(status, raw, content_type, retry_after, verdict, code, in_doubt):
    attempt = classify(status, raw, content_type, retry_after)
    assert (attempt.verdict, attempt.http_status, attempt.code, attempt.in_doubt) == (
        verdict, status, code, in_doubt)
    assert "\n" not in attempt.message and len(attempt.message) < 300
    if verdict in (Verdict.THROTTLED, Verdict.RETRY) and retry_after:
        assert attempt.retry_after == retry_after


def test_classify_keeps_ids_warnings_and_every_error_message():
    ok = classify(200, body(createdId=42, warnings=[{"status": False, "code": 91015, "message": "city too long"}]))
    assert (ok.customer_id, ok.warnings) == ("42", "91015: city too long")
    refused = classify(400, errors(8015, 1017, message="bad"))
    assert refused.message == "bad 8015 | bad 1017"


def test_gateway_pages_are_summarised_in_one_line():
    assert summarise_body(502, gateway_page(502, "Bad Gateway"), "text/html; charset=utf-8") == (
        "HTTP 502 (text/html): 502 Bad Gateway")
    page = b"<html><body>\n<h1>Oops</h1>\n<p>Something\n   went &amp; wrong</p></body></html>"
    assert summarise_body(500, page, "") == "HTTP 500 (no content type): Oops Something went & wrong"
    assert summarise_body(503, b"", "text/html") == "HTTP 503 (text/html)"
    assert len(summarise_body(500, b"x" * 10_000, "text/plain")) < 200


def test_basic_authorization_follows_the_documented_md5_rule():
    assert basic_authorization("store.server", "server123") == (
        "Basic c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3")


# --- Against the sandbox, in the test's event loop ---------------------------------

def make_client(url: str, *, oauth: bool = False, **limits) -> ApiClient:
    overrides = {"api.base_url": url, "api.username": "demo-key" if oauth else "demo.till",
                 "api.auth": "oauth" if oauth else "basic"}
    overrides.update({f"limits.{k}": v for k, v in limits.items()})
    secret = "demo-secret" if oauth else "demo-password"
    config = load_config(None, overrides=overrides, environ={"BATCH_UPDATER_PASSWORD": secret})
    return ApiClient.open(config.api, config.limits)


def payload(i: int, **body) -> Payload:
    return Payload(i + 2, Lookup("INSTORE", "mobile", mobile(i), None), body or {"profiles": [{"firstName": f"R{i}"}]})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_oauth_token_is_renewed_before_it_expires_and_after_invalidate():
    async with Sandbox(SandboxSettings(customers=100, token_ttl_seconds=300)) as sandbox:
        client = make_client(sandbox.url, oauth=True)
        clock = FakeClock()
        token = OAuthToken(client.session, client.api, clock=clock)
        try:
            first = await token.header()
            clock.now += 0.79 * 300
            assert await token.header() == first  # 79% of the lifetime: still the same token
            clock.now += 0.02 * 300
            second = await token.header()  # past 80%: renewed before it expires
            assert second != first
            token.invalidate(first)  # a stale 401 must not throw away the newer token
            assert await token.header() == second
            token.invalidate(second)
            third = await token.header()
            assert third not in (first, second)
        finally:
            await client.close()
        fetches = [r for r in sandbox.state.requests if r.path == "/v3/oauth/token/generate"]
        assert len(fetches) == 3
        assert fetches[0].body == {"key": "demo-key", "secret": "demo-secret"}


async def test_a_401_renews_the_token_once_and_sends_again_paced():
    async with Sandbox(SandboxSettings(customers=100, token_ttl_seconds=0.2)) as sandbox:
        client = make_client(sandbox.url, oauth=True)
        client.token = OAuthToken(client.session, client.api, clock=lambda: 0.0)  # never renews by itself
        paced = []

        async def pace() -> None:
            paced.append(len(sandbox.state.requests))
        try:
            assert (await client.send(payload(1), pace)).verdict is Verdict.SUCCESS
            await asyncio.sleep(0.3)  # the sandbox's token expires
            attempt = await client.send(payload(2), pace)
        finally:
            await client.close()
        assert (attempt.verdict, attempt.renewed) == (Verdict.SUCCESS, True)
        puts = [(r.status, r.outcome) for r in sandbox.state.requests if r.method == "PUT"]
        assert puts == [(200, "ok"), (401, "auth"), (200, "ok")]
        assert len(paced) == 3  # every request went through the pacing hook


async def test_a_refused_oauth_secret_aborts_the_run():
    async with Sandbox(SandboxSettings(customers=100)) as sandbox:
        config = load_config(None, overrides={"api.base_url": sandbox.url, "api.username": "demo-key",
                                              "api.auth": "oauth"},
                             environ={"BATCH_UPDATER_PASSWORD": "wrong"})
        client = ApiClient.open(config.api, config.limits)
        try:
            with pytest.raises(RunAborted, match=r"OAuth token request refused \(HTTP 401\)"):
                await client.send(payload(1))
        finally:
            await client.close()
        assert not [r for r in sandbox.state.requests if r.method == "PUT"]


async def test_timeouts_come_from_the_limits_settings():
    client = make_client("http://127.0.0.1:9", timeout_seconds=12.0, connect_timeout_seconds=3.0,
                         read_timeout_seconds=7.0)
    try:
        timeout = client.session.timeout
        assert (timeout.total, timeout.sock_connect, timeout.sock_read) == (12.0, 3.0, 7.0)
        assert client.session._retry_connection is False  # no hidden re-send of a PUT
    finally:
        await client.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_refused_connection_is_not_in_doubt():
    client = make_client(f"http://127.0.0.1:{closed_port()}")
    try:
        attempt = await client.send(payload(1))
    finally:
        await client.close()
    assert (attempt.verdict, attempt.in_doubt) == (Verdict.NETWORK, False)
    assert attempt.message.startswith("not sent:")


@pytest.mark.parametrize("faults, limits, why", [
    (Faults(drop_before=1.0), {}, "Server disconnected"),
    (Faults(drop_after=1.0), {}, "Server disconnected"),
    (Faults(slow=1.0, slow_seconds=0.3), {"read_timeout_seconds": 0.05}, "read_timeout_seconds"),
    (Faults(slow=1.0, slow_seconds=0.3), {"timeout_seconds": 0.05}, "timeout_seconds"),
])
async def test_a_request_sent_without_an_answer_is_in_doubt(faults, limits, why):
    async with Sandbox(SandboxSettings(customers=100, faults=faults)) as sandbox:
        client = make_client(sandbox.url, **limits)
        try:
            attempt = await client.send(payload(1))
        finally:
            await client.close()
    assert (attempt.verdict, attempt.in_doubt, attempt.http_status) == (Verdict.NETWORK, True, None)
    assert why in attempt.message and "may or may not have been applied" in attempt.message


def test_attempt_defaults_describe_one_request_sent():
    attempt = Attempt(Verdict.SUCCESS, 200)
    assert (attempt.sent, attempt.renewed, attempt.in_doubt) == (True, False, False)


async def test_a_token_route_that_is_down_fails_the_attempt_retryably_without_sending():
    from aiohttp import web

    answers = [web.Response(status=503, text="<html><title>503 Service Unavailable</title></html>",
                            content_type="text/html"),
               web.json_response({"data": {"accessToken": "t1", "ttlSeconds": 300}, "errors": None})]
    seen = []

    async def token(request: web.Request) -> web.Response:
        return answers.pop(0)

    async def update(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-CAP-API-OAUTH-TOKEN"))
        return web.json_response({"createdId": 7, "warnings": []})

    app = web.Application()
    app.router.add_post("/v3/oauth/token/generate", token)
    app.router.add_put("/v2/customers/lookup", update)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = make_client(f"http://127.0.0.1:{runner.addresses[0][1]}", oauth=True)
    try:
        down = await client.send(payload(1))
        up = await client.send(payload(1))
    finally:
        await client.close()
        await runner.cleanup()
    assert (down.verdict, down.http_status, down.sent) == (Verdict.RETRY, 503, False)
    assert "cannot get an OAuth token" in down.message and "503 Service Unavailable" in down.message
    assert (up.verdict, up.customer_id) == (Verdict.SUCCESS, "7")
    assert seen == ["t1"]  # nothing was sent without a token


async def test_a_connect_timeout_is_not_in_doubt():
    # A listening socket that never accepts, its backlog full: new connections hang in SYN.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        await asyncio.sleep(0.05)
        client = make_client(f"http://127.0.0.1:{port}", connect_timeout_seconds=0.1)
        try:
            attempt = await client.send(payload(1))
        finally:
            await client.close()
            for filler in fillers:
                filler.close()
    assert (attempt.verdict, attempt.in_doubt, attempt.unreachable) == (Verdict.NETWORK, False, True)
    assert attempt.message == (f"not sent: cannot connect to http://127.0.0.1:{port}"
                               " (no connection within connect_timeout_seconds)")


async def _first_attempt(url: str, **options) -> Attempt:
    client = make_client(url, **options)
    try:
        return await client.send(payload(1))
    finally:
        await client.close()


async def test_a_refused_connection_names_the_real_scheme_and_the_cause():
    port = _closed_port()
    attempt = await _first_attempt(f"http://127.0.0.1:{port}")
    assert (attempt.verdict, attempt.in_doubt, attempt.unreachable) == (Verdict.NETWORK, False, True)
    assert attempt.message == f"not sent: cannot connect to http://127.0.0.1:{port} (Connection refused)"
    assert "ssl:default" not in attempt.message


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_no_token_route_at_the_base_url_aborts_with_a_hint():
    from aiohttp import web

    runner = web.AppRunner(web.Application())  # every route answers 404
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = make_client(f"http://127.0.0.1:{runner.addresses[0][1]}", oauth=True)
    try:
        with pytest.raises(RunAborted, match=r"no OAuth token route at .* \(HTTP 404\): check \[api\] base_url"):
            await client.send(payload(1))
    finally:
        await client.close()
        await runner.cleanup()


async def test_a_tls_handshake_with_a_plain_http_port_is_a_connection_failure(sandbox_server):
    url = sandbox_server().url.replace("http://", "https://")
    attempt = await _first_attempt(url)
    assert (attempt.verdict, attempt.unreachable) == (Verdict.NETWORK, True)
    assert attempt.message.startswith(f"not sent: cannot connect to {url} (TLS: ")


async def test_a_run_halted_before_the_renewed_request_keeps_the_401():
    async with Sandbox(SandboxSettings(customers=100, token_ttl_seconds=0.2)) as sandbox:
        client = make_client(sandbox.url, oauth=True)
        client.token = OAuthToken(client.session, client.api, clock=lambda: 0.0)
        calls = []

        def pace():
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("halted")  # the pool's own halt, raised by its pacing hook
        try:
            await client.send(payload(1), pace)
            await asyncio.sleep(0.3)
            attempt = await client.send(payload(2), pace)
        finally:
            await client.close()
    assert (attempt.verdict, attempt.http_status, attempt.renewed) == (Verdict.AUTH, 401, False)


async def test_an_oauth_token_route_that_cannot_be_reached_is_a_connection_failure():
    port = _closed_port()
    attempt = await _first_attempt(f"http://127.0.0.1:{port}", oauth=True)
    assert (attempt.verdict, attempt.unreachable, attempt.sent) == (Verdict.NETWORK, True, False)
    assert attempt.message == f"not sent: cannot connect to http://127.0.0.1:{port} (Connection refused)"
