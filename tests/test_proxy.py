"""HTTP proxies: [api] proxy, HTTPS_PROXY / HTTP_PROXY / NO_PROXY, credentials never shown.

A small real proxy runs on 127.0.0.1 in front of the sandbox: it forwards plain http
requests (absolute URLs) and tunnels https ones (CONNECT), checks Proxy-Authorization when
given credentials, and records what went through it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from conftest import PASSWORD, ServerThread, customer_puts, mobile, write_config, write_csv
from test_tls import HttpsSandbox, certificate  # noqa: F401 (a fixture)

from batch_updater.cli import main
from batch_updater.config import load_config
from batch_updater.sandbox import basic_auth_header
from batch_updater.send.tls import bypassed, proxy_for

SECRET = "pr0xy-S3cret!"


class Proxy(ServerThread):
    """A forwarding and CONNECT proxy in a background thread; `seen` holds (method, target)."""

    def __init__(self, user: str | None = None, password: str | None = None):
        super().__init__()
        self.expected = (None if user is None else
                         "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        self.seen: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []  # of each request in `seen`
        self.refused = 0

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server:
            await self._serving()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
            body = await reader.readexactly(int(headers.get("Content-Length", 0)))
            if self.expected and headers.get("Proxy-Authorization") != self.expected:
                self.refused += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic"
                             b' realm="test"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
                return
            self.seen.append((method, target))
            self.headers.append(headers)
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, headers, body, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with suppress(OSError):
                await writer.drain()
                writer.close()

    async def _tunnel(self, target: str, reader, writer) -> None:
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source, sink) -> None:
            with suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with suppress(OSError):
                sink.close()
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def _forward(self, method: str, target: str, headers: dict, body: bytes, writer) -> None:
        url = urlsplit(target)
        upstream_reader, upstream_writer = await asyncio.open_connection(url.hostname, url.port)
        kept = {k: v for k, v in headers.items() if not k.lower().startswith("proxy-") and k.lower() != "connection"}
        path = url.path + (f"?{url.query}" if url.query else "")
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in kept.items()), "Connection: close"]
        upstream_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        writer.write(await upstream_reader.read())  # the whole answer: the upstream closes after it
        upstream_writer.close()


@pytest.fixture
def proxy():
    with Proxy() as server:
        yield server


@pytest.fixture
def guarded_proxy():
    with Proxy("ops", SECRET) as server:
        yield server


def _run(tmp_path: Path, url: str, env: dict[str, str] | None = None, rows: int = 3, password: str = PASSWORD,
         limits: dict | None = None, **api):
    tmp_path.mkdir(exist_ok=True)
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], [[mobile(i), "A"] for i in range(rows)])
    config = write_config(tmp_path, url, password=password, api=api, limits=limits or {"max_attempts": 1})
    env = {"HTTPS_PROXY": "", "HTTP_PROXY": "", "NO_PROXY": "", "https_proxy": "", "http_proxy": "",
           "no_proxy": "", "BATCH_UPDATER_PROXY_PASSWORD": "", **(env or {})}
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json",
                                       "--log-file", str(tmp_path / "run.log")], env=env)
    assert result.stdout, result.output
    return result, json.loads(result.stdout)


def _puts(proxy: Proxy) -> list[str]:
    return [target for method, target in proxy.seen if method == "PUT"]


def test_the_configured_proxy_carries_every_request(tmp_path, sandbox_server, proxy):
    server = sandbox_server()
    result, summary = _run(tmp_path, server.url, proxy=proxy.url)

    assert (result.exit_code, summary["success"]) == (0, 3), result.output
    assert sorted(_puts(proxy)) == sorted(f"{server.url}/v2/customers/lookup?source=INSTORE&identifierName=mobile"
                                          f"&identifierValue={mobile(i)}" for i in range(3))
    assert len(customer_puts(server)) == 3
    assert summary["config"]["api"]["proxy"] == proxy.url


def test_the_environment_proxy_and_no_proxy(tmp_path, sandbox_server, proxy):
    server = sandbox_server()
    result, _ = _run(tmp_path, server.url, env={"HTTP_PROXY": proxy.url})
    assert result.exit_code == 0 and len(_puts(proxy)) == 3

    result, _ = _run(tmp_path / "direct", server.url, env={"http_proxy": proxy.url, "NO_PROXY": "localhost,127.0.0.1"})
    assert result.exit_code == 0
    assert len(_puts(proxy)) == 3 and len(customer_puts(server)) == 3 + 3  # the second run went directly


def test_https_goes_through_a_connect_tunnel_and_the_ca_bundle_still_verifies(tmp_path, certificate, proxy):  # noqa: F811
    with HttpsSandbox(*certificate) as server:
        result, _ = _run(tmp_path, server.url, env={"HTTPS_PROXY": proxy.url}, ca_bundle=str(certificate[0]))
        assert result.exit_code == 0, result.output
        assert set(proxy.seen) == {("CONNECT", f"127.0.0.1:{urlsplit(server.url).port}")}  # one per connection
        assert len(customer_puts(server)) == 3

        untrusted, summary = _run(tmp_path / "again", server.url, env={"HTTPS_PROXY": proxy.url})
        assert untrusted.exit_code == 3  # verification inside the tunnel: the sandbox's certificate is self-signed
        assert summary["reason"].startswith("the API's TLS certificate (127.0.0.1) is not trusted")


def test_a_tunnel_carries_the_proxys_credentials_and_never_the_apis(tmp_path, certificate,  # noqa: F811
                                                                   guarded_proxy):
    with HttpsSandbox(*certificate) as server:
        url = guarded_proxy.url.replace("http://", "http://ops@")
        result, _ = _run(tmp_path, server.url, env={"BATCH_UPDATER_PROXY_PASSWORD": SECRET}, proxy=url,
                         ca_bundle=str(certificate[0]))
        assert result.exit_code == 0, result.output
        assert {h.get("Proxy-Authorization") for h in guarded_proxy.headers} == {guarded_proxy.expected}
        assert not any("Authorization" in h for h in guarded_proxy.headers)  # the API's Basic header
        assert {r.headers["Authorization"] for r in customer_puts(server)} == {
            basic_auth_header("demo.till", PASSWORD)}
        assert not any("Proxy-Authorization" in r.headers for r in customer_puts(server))


def test_a_plain_http_api_through_a_proxy_without_credentials(tmp_path, sandbox_server, proxy):
    server = sandbox_server()
    result, _ = _run(tmp_path, server.url, proxy=proxy.url)
    assert result.exit_code == 0, result.output
    assert not any("Proxy-Authorization" in h for h in proxy.headers)  # nothing of the API's leaks into it
    assert {h["Authorization"] for h in proxy.headers} == {basic_auth_header("demo.till", PASSWORD)}


def test_the_oauth_token_request_goes_through_the_proxy_too(tmp_path, sandbox_server, proxy):
    server = sandbox_server()
    result, _ = _run(tmp_path, server.url, password="demo-secret", proxy=proxy.url, auth="oauth",
                     username="demo-key")

    assert result.exit_code == 0, result.output
    assert proxy.seen[0] == ("POST", f"{server.url}/v3/oauth/token/generate")


def test_proxy_credentials_from_the_environment_and_never_shown(tmp_path, sandbox_server, guarded_proxy):
    server = sandbox_server()
    url = guarded_proxy.url.replace("http://", "http://ops@")
    result, summary = _run(tmp_path, server.url, env={"BATCH_UPDATER_PROXY_PASSWORD": SECRET}, proxy=url)

    assert result.exit_code == 0, result.output
    assert len(_puts(guarded_proxy)) == 3
    assert summary["config"]["api"]["proxy"] == guarded_proxy.url.replace("http://", "http://***@")
    assert "proxy_password" not in summary["config"]["api"]


def test_a_wrong_proxy_password_aborts_at_once_naming_the_proxy_not_the_password(tmp_path, sandbox_server,
                                                                                 guarded_proxy):
    server = sandbox_server()
    wrong = "Wr0ng-" + SECRET
    url = guarded_proxy.url.replace("http://", f"http://ops:{wrong}@")
    result, summary = _run(tmp_path, server.url, rows=50, proxy=url)

    assert result.exit_code == 3
    shown = guarded_proxy.url.replace("http://", "http://***@")
    assert summary["reason"] == (f"the proxy {shown} ([api] proxy) refused its credentials (HTTP 407 Proxy"
                                 " Authentication Required): check the user in [api] proxy and the password"
                                 " (BATCH_UPDATER_PROXY_PASSWORD, or in the URL); nothing was sent")
    assert (summary["not_sent"], summary["requests"], summary["errors"]) == (50, 0, 0)
    assert customer_puts(server) == []
    everything = result.output + (tmp_path / "run.log").read_text() + Path(summary["reports"]["summary"]).read_text()
    assert wrong not in everything and "ops" not in everything


def test_a_wrong_proxy_password_through_a_connect_tunnel(tmp_path, certificate, guarded_proxy):  # noqa: F811
    with HttpsSandbox(*certificate) as server:
        result, summary = _run(tmp_path, server.url, rows=20, ca_bundle=str(certificate[0]),
                               env={"HTTPS_PROXY": guarded_proxy.url.replace("http://", "http://ops:nope@")})
        assert result.exit_code == 3
        assert summary["reason"].startswith(
            f"the proxy {guarded_proxy.url.replace('http://', 'http://***@')} (HTTPS_PROXY) refused its credentials")
        assert "nope" not in result.output and customer_puts(server) == []


def test_a_proxy_that_is_not_there_aborts_naming_it(tmp_path, sandbox_server):
    server = sandbox_server()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result, summary = _run(tmp_path, server.url, rows=30, proxy=f"http://ops:{SECRET}@127.0.0.1:{port}",
                           limits={"rate_per_minute": 600})

    assert result.exit_code == 3
    assert summary["reason"].startswith(f"cannot reach the API: cannot connect to the proxy http://***@127.0.0.1:{port}"
                                        " ([api] proxy) (Connection refused): check the proxy's host and port")
    assert (summary["requests"], summary["errors"], summary["not_sent"]) == (0, 0, 30)  # nothing reached the API
    assert SECRET not in result.output and customer_puts(server) == []


def test_a_proxy_url_that_is_not_one_is_a_config_error_that_hides_the_password(tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:9", api={"proxy": f"socks5://ops:{SECRET}@proxy:1080"})
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config)])

    assert result.exit_code == 2
    assert (f"{config} [api] proxy: expected a proxy URL such as http://proxy.example.com:3128 or"
            " http://user@proxy.example.com:3128, got 'socks5://***@proxy:1080'") in result.stderr
    assert SECRET not in result.output


def test_which_proxy_applies(tmp_path):
    def api(url: str, **settings):
        overrides = {"api.base_url": url, "api.username": "u", **{f"api.{k}": v for k, v in settings.items()}}
        return load_config(None, overrides=overrides, environ={"BATCH_UPDATER_PASSWORD": "x"}).api

    https = api("https://eu.api.capillarytech.com")
    assert proxy_for(https, {}) is None
    assert proxy_for(https, {"HTTP_PROXY": "http://p:1"}) is None  # the https API takes HTTPS_PROXY
    assert proxy_for(https, {"HTTPS_PROXY": "http://P:3128", "https_proxy": "http://q:3128"}).url == "http://q:3128"
    assert proxy_for(https, {"HTTPS_PROXY": "proxy:3128"}).url == "http://proxy:3128"  # as curl reads it
    assert proxy_for(https, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".capillarytech.com"}) is None
    configured = api("https://eu.api.capillarytech.com", proxy="http://ops:pw@corp:8080")
    chosen = proxy_for(configured, {"HTTPS_PROXY": "http://other:1"})
    assert (chosen.url, chosen.user, chosen.password.reveal(), chosen.shown) == (
        "http://corp:8080", "ops", "pw", "http://***@corp:8080")
    assert "pw" not in repr(configured) and "pw" not in repr(chosen)
    assert proxy_for(configured, {"NO_PROXY": "*"}) is None


@pytest.mark.parametrize(("host", "port", "no_proxy", "direct"), [
    ("127.0.0.1", 80, "127.0.0.1", True),
    ("127.0.0.1", 80, "localhost, 127.0.0.0/8", True),
    ("api.example.com", 443, ".example.com", True),
    ("api.example.com", 443, "example.com", True),
    ("api.example.com", 443, "example.com:443", True),
    ("api.example.com", 443, "example.com:8443", False),
    ("notexample.com", 443, "example.com", False),
    ("::1", 80, "[::1]", True),
    ("anything", 1, "*", True),
])
def test_no_proxy_as_curl_reads_it(host, port, no_proxy, direct):
    assert bypassed(host, port, no_proxy) is direct


# --- `check` through the proxy -------------------------------------------------------------

def _check(tmp_path: Path, url: str, environ: dict[str, str], **api):
    from batch_updater.check import check_setup
    return {step.name: step for step in check_setup(write_config(tmp_path, url, api=api), environ=environ)}


def test_check_reaches_the_api_through_the_proxy_tunnel(tmp_path, certificate, guarded_proxy):  # noqa: F811
    with HttpsSandbox(*certificate) as server:
        steps = _check(tmp_path, server.url, {"HTTPS_PROXY": guarded_proxy.url.replace("http://", "http://ops@"),
                                              "BATCH_UPDATER_PROXY_PASSWORD": SECRET},
                       ca_bundle=str(certificate[0]))
    assert {name: step.status for name, step in steps.items()} == dict.fromkeys(steps, "ok")
    assert "(the proxy http://***@127.0.0.1:" in steps["dns"].detail  # the proxy is what this host resolves
    assert steps["port"].detail.startswith(f"127.0.0.1:{urlsplit(guarded_proxy.url).port} accepts")
    assert "through the proxy" in steps["tls"].detail
    port = urlsplit(server.url).port
    assert guarded_proxy.seen.count(("CONNECT", f"127.0.0.1:{port}")) >= 2  # the TLS step's and the lookup's


def test_check_names_a_proxy_that_refuses_our_credentials(tmp_path, certificate, guarded_proxy):  # noqa: F811
    with HttpsSandbox(*certificate) as server:
        steps = _check(tmp_path, server.url, {"BATCH_UPDATER_PROXY_PASSWORD": "wrong-Pr0xy"},
                       proxy=guarded_proxy.url.replace("http://", "http://ops@"), ca_bundle=str(certificate[0]))
    assert steps["tls"].status == "fail"
    assert "refused our credentials (HTTP 407)" in steps["tls"].detail
    assert "BATCH_UPDATER_PROXY_PASSWORD" in steps["tls"].detail
    assert steps["credentials"].status == "skip"
    assert not any("wrong-Pr0xy" in step.detail for step in steps.values())
    assert guarded_proxy.refused == 1 and not guarded_proxy.seen


def test_check_names_a_proxy_where_nothing_listens(tmp_path, sandbox_server):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    steps = _check(tmp_path, sandbox_server().url, {"HTTP_PROXY": f"http://127.0.0.1:{dead}"})
    assert steps["dns"].status == "ok"
    assert steps["port"].status == "fail"
    assert steps["port"].detail.startswith(f"the proxy http://127.0.0.1:{dead} (HTTP_PROXY) refused the connection")


def test_check_fails_when_a_plain_http_apis_proxy_refuses_our_credentials(tmp_path, sandbox_server, guarded_proxy):
    steps = _check(tmp_path, sandbox_server().url, {"BATCH_UPDATER_PROXY_PASSWORD": "wrong-Pr0xy"},
                   proxy=guarded_proxy.url.replace("http://", "http://ops@"))
    assert steps["credentials"].status == "fail"  # the 407 came from the proxy, not the API
    assert "refused its credentials (HTTP 407" in steps["credentials"].detail
    assert not any("wrong-Pr0xy" in step.detail for step in steps.values())


def test_one_rule_for_the_proxy_password_the_variable_first(tmp_path):
    api = load_config(None, overrides={"api.base_url": "http://api.example.com", "api.username": "u"},
                      environ={"BATCH_UPDATER_PASSWORD": "x", "BATCH_UPDATER_PROXY_PASSWORD": "right"}).api
    from_env = proxy_for(api, {"HTTP_PROXY": "http://ops:stale@corp:3128"})
    assert (from_env.user, from_env.password.reveal()) == ("ops", "right")
    configured = load_config(None, overrides={"api.base_url": "http://api.example.com", "api.username": "u",
                                              "api.proxy": "http://ops:stale@corp:3128"},
                             environ={"BATCH_UPDATER_PASSWORD": "x", "BATCH_UPDATER_PROXY_PASSWORD": "right"}).api
    assert proxy_for(configured, {}).password.reveal() == "right"


def test_a_proxy_without_a_scheme_is_http_as_curl_reads_it(tmp_path):
    api = load_config(None, overrides={"api.base_url": "https://api.example.com", "api.username": "u",
                                       "api.proxy": "corp:3128"}, environ={"BATCH_UPDATER_PASSWORD": "x"}).api
    assert proxy_for(api, {}).url == "http://corp:3128"


def test_no_proxy_with_the_default_port_covers_a_url_without_one():
    api = load_config(None, overrides={"api.base_url": "https://api.example.com", "api.username": "u"},
                      environ={"BATCH_UPDATER_PASSWORD": "x"}).api
    assert proxy_for(api, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.example.com:443"}) is None
    assert proxy_for(api, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.example.com:8443"}) is not None
