"""One HTTP attempt against the customer update API (send.answers says what its answer means).

The client never retries on its own (but for sending a
row once more with a renewed OAuth token after a 401): aiohttp's silent re-send of an
idempotent request on a closed keep-alive connection is turned off, so every attempt is
counted and an attempt in doubt is never hidden. Each request goes out right after the
caller's pacing hook lets it, so the rate limiter sees the start times the API counts.

Through an HTTP proxy (send/tls.py says which), a proxy that cannot be reached counts as an
unreachable API (three at the start abort the run), and one that refuses (407 for the
credentials, 403 for the host) aborts the run at once: no row can get past it. Messages
name the proxy with its credentials masked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import SplitResult, quote

import aiohttp
import orjson
from yarl import URL

from ..config import PROXY_PASSWORD_ENV, ApiSettings, LimitSettings
from ..errors import RunAborted
from ..rows.payload import Lookup, Payload, add_body
from .answers import RETRYABLE_STATUSES, Attempt, Verdict, _json_object, classify, summarise_body
from .tls import Proxy, proxy_for

LOOKUP_PATH = "/v2/customers/lookup"
ADD_PATH = "/v2/customers"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
TOKEN_PATH = "/v3/oauth/token/generate"
def basic_authorization(username: str, password: str) -> str:
    """Capillary's Basic rule: the password is MD5-hashed (lowercase hex) before encoding."""
    digest = hashlib.md5(password.encode("utf-8")).hexdigest()
    return "Basic " + base64.b64encode(f"{username}:{digest}".encode()).decode("ascii")


class TokenUnavailable(Exception):
    """The token route failed in a way that may pass (network, 429, 5xx): retry the row."""

    def __init__(self, message: str, status: int | None = None, retry_after: str | None = None,
                 unreachable: bool = False):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.unreachable = unreachable  # no connection to the host at all


class OAuthToken:
    """Fetches a token, renews it before it expires, and on demand after a 401.

    A refused key or secret (or a route that is not a token route) aborts the run; a
    token route that is down or throttled raises TokenUnavailable, retried like a 5xx.
    """

    RENEW_FRACTION = 0.2  # renew when less than this share of the lifetime is left

    def __init__(self, session: aiohttp.ClientSession, api: ApiSettings, *, clock=time.monotonic,
                 proxy: Proxy | None = None):
        self._session = session
        self._api = api
        self._proxy = proxy
        self._proxy_headers = tunnel_headers(api, proxy)
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def header(self) -> dict[str, str]:
        if self._token is None or self._clock() >= self._renew_at:
            async with self._lock:
                if self._token is None or self._clock() >= self._renew_at:
                    await self._fetch()
        return {"X-CAP-API-OAUTH-TOKEN": self._token or ""}

    def invalidate(self, token_header: dict[str, str]) -> None:
        """The API refused this token: the next header() fetches a new one (unless a
        newer token has replaced it already)."""
        if token_header.get("X-CAP-API-OAUTH-TOKEN") == self._token:
            self._token = None

    async def _fetch(self) -> None:
        url = self._api.base_url.rstrip("/") + TOKEN_PATH
        body = {"key": self._api.username, "secret": self._api.password.reveal()}
        try:
            async with self._session.post(url, data=orjson.dumps(body), headers={
                    "Content-Type": "application/json", "Accept": "application/json"},
                    proxy_headers=self._proxy_headers) as response:
                raw = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
                refused_by_proxy(self._proxy, status, self._api.base_url)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise RunAborted(untrusted_certificate(exc)) from None
        except aiohttp.ConnectionTimeoutError:  # before asyncio.TimeoutError: a subclass
            raise TokenUnavailable(cannot_connect(self._api.base_url, "no connection within"
                                   " connect_timeout_seconds", self._proxy), unreachable=True) from None
        except aiohttp.ClientProxyConnectionError as exc:  # before ClientConnectorError: a subclass
            raise TokenUnavailable(proxy_unreachable(self._proxy, connect_cause(exc)), unreachable=True) from None
        except aiohttp.ClientHttpProxyError as exc:
            refused_by_proxy(self._proxy, exc.status, self._api.base_url, tunnel=True)
            raise TokenUnavailable(tunnel_failed(self._proxy, exc.status, self._api.base_url),
                                   unreachable=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise TokenUnavailable(cannot_connect(self._api.base_url, connect_cause(exc), self._proxy),
                                   unreachable=True) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TokenUnavailable(f"cannot get an OAuth token from {url}: {_network_message(exc)}") from None
        data = _json_object(raw) or {}
        token = (data.get("data") or {}).get("accessToken") if isinstance(data.get("data"), dict) else None
        if status == 429 or status in RETRYABLE_STATUSES or status >= 500:
            raise TokenUnavailable(f"cannot get an OAuth token from {url}: "
                                   f"{summarise_body(status, raw, response.content_type)}", status, retry_after)
        if status in (404, 405):
            raise RunAborted(f"no OAuth token route at {url} (HTTP {status}): check [api] base_url,"
                             " the cluster's host (e.g. https://eu.api.capillarytech.com)")
        if status != 200 or not token:
            said = summarise_body(status, raw, response.content_type)
            message = next((str(e.get("message")) for e in data.get("errors") or [] if isinstance(e, dict)), said)
            raise RunAborted(f"OAuth token request refused (HTTP {status}): check [api] username (the OAuth"
                             f" key) and the secret (BATCH_UPDATER_PASSWORD or [api] password_file); the API"
                             f" said: {message}")
        ttl = float((data.get("data") or {}).get("ttlSeconds") or 300)
        now = self._clock()
        self._token = token
        self._renew_at = now + ttl * (1 - self.RENEW_FRACTION)


@dataclass
class ApiClient:
    """Sends one payload per call over one shared ClientSession."""

    session: aiohttp.ClientSession
    api: ApiSettings
    token: OAuthToken | None = None
    _basic: dict[str, str] = field(default_factory=dict)
    _urls: dict[tuple, tuple[str, str, str, str, str]] = field(default_factory=dict)  # see url()
    _session_sends: dict[str, str] | None = None  # auth headers the session adds to every request
    proxy: Proxy | None = None
    _proxy_headers: dict[str, str] | None = None  # Proxy-Authorization for CONNECT (tunnel_headers)

    @classmethod
    def open(cls, api: ApiSettings, limits: LimitSettings, environ: Mapping[str, str] | None = None) -> ApiClient:
        """A client for `api`; `environ` (default os.environ) holds the proxy variables."""
        timeout = aiohttp.ClientTimeout(total=limits.timeout_seconds,
                                        sock_connect=limits.connect_timeout_seconds,
                                        sock_read=limits.read_timeout_seconds)
        from ..output.logs import log
        from .tls import insecure_warning, ssl_argument

        if warning := insecure_warning(api):
            log.warning(warning)
        connector = aiohttp.TCPConnector(limit=limits.concurrency + 2, ssl=ssl_argument(api))
        basic = ({} if api.auth == "oauth" else
                 {"Authorization": basic_authorization(api.username, api.password.reveal())})
        proxy = proxy_for(api, environ)
        if proxy is not None:
            log.info("connecting to %s through %s", URL(api.base_url).host, proxy.describe())
        # Headers every request carries are the session's: not merged again for each request.
        # But aiohttp sends a session's headers to the proxy too (on CONNECT), and makes its
        # Authorization the Proxy-Authorization: through a proxy, each request carries its own.
        # The proxy is ours (proxy_for), not trust_env's, which would also read ~/.netrc.
        shared = {**JSON_HEADERS, **basic} if proxy is None else {}
        if not tunnel_headers(api, proxy):
            shared |= proxy_authorization(proxy)  # a plain http API: requests go to the proxy whole
        session = aiohttp.ClientSession(timeout=timeout, connector=connector, headers=shared,
                                        json_serialize=lambda o: orjson.dumps(o).decode(),
                                        proxy=proxy.url if proxy else None)
        # Our retry loop must see every attempt; aiohttp would otherwise re-send a PUT
        # silently when a pooled connection turns out closed (an attempt in doubt, hidden).
        session._retry_connection = False
        client = cls(session, api, proxy=proxy, _proxy_headers=tunnel_headers(api, proxy))
        if api.auth == "oauth":
            client.token = OAuthToken(session, api, proxy=proxy)
        else:
            client._basic = basic
            client._session_sends = basic if proxy is None else None
        return client

    async def close(self) -> None:
        await self.session.close()

    async def get(self, url: URL) -> tuple[int, bytes, str]:
        """A GET with what a run's requests carry (credentials, proxy), for `check`'s lookup."""
        auth = await self._auth_headers()
        headers = None if auth is self._session_sends else {**JSON_HEADERS, **auth}
        async with self.session.get(url, headers=headers, proxy_headers=self._proxy_headers) as response:
            refused_by_proxy(self.proxy, response.status, self.api.base_url)  # a plain http API's proxy
            return response.status, await response.read(), response.headers.get("Content-Type", "")

    async def _auth_headers(self) -> dict[str, str]:
        return await self.token.header() if self.token else self._basic

    def url(self, payload: Payload) -> URL:
        lookup = payload.lookup
        shape = (lookup.source, lookup.identifier_name, lookup.account_id)
        parts = self._urls.get(shape)
        if parts is None:
            if len(self._urls) >= 64:  # a file with many accounts: keep the cache small
                self._urls.clear()
            parts = self._urls[shape] = self._url_parts(lookup)
        scheme, authority, path, before, after = parts
        # From parts, the URL is not parsed again: a third of the cost, once per request.
        return URL(SplitResult(scheme, authority, path, before + _encoded(lookup.identifier_value) + after, ""),
                   encoded=True)

    def _url_parts(self, lookup: Lookup) -> tuple[str, str, str, str, str]:
        """The lookup URL for customers of one shape (source, identifierName, accountId):
        scheme, authority, path and the query split where the identifier value goes.
        Lookup.query decides the parameters and their order; only the value changes
        from row to row."""
        marker = "v" + secrets.token_hex(16)  # alphanumeric: _encoded leaves it as it is
        query = "&".join(f"{name}={_encoded(value)}" for name, value in
                         lookup._replace(identifier_value=marker).query(self.api.use_async).items())
        url = URL(f"{self.api.base_url.rstrip('/')}{LOOKUP_PATH}?{query}", encoded=True)
        before, _, after = url.raw_query_string.partition(marker)
        return url.scheme, url.raw_authority, url.raw_path, before, after

    def add_url(self, payload: Payload) -> URL:
        """POST /v2/customers?source=S[&accountId=A]: the Add Customer API (upsert mode)."""
        lookup = payload.lookup
        query = {"source": lookup.source} | ({"accountId": lookup.account_id} if lookup.account_id else {})
        return URL(f"{self.api.base_url.rstrip('/')}{ADD_PATH}").with_query(query)

    async def send(self, payload: Payload, pace: Callable[[], Awaitable[object] | None] | None = None,
                   *, add: bool = False) -> Attempt:
        """One attempt for a row, an update (or with `add`, an add of the customer);
        `pace` is called right before each request goes out, and what it returns is
        awaited unless it is None (a slot was free at once).

        With OAuth, a 401 renews the token once and sends the row again (paced too):
        the returned Attempt then says `renewed` and carries the second answer.
        """
        if add:
            url, method, data = self.add_url(payload), "POST", orjson.dumps(add_body(payload))
        else:
            url, method, data = self.url(payload), "PUT", orjson.dumps(payload.body)
        if self.token is None:  # Basic: no token to fetch or renew
            if pace is not None and (waiting := pace()) is not None:
                await waiting
            return await self._request(method, url, data, self._basic)
        try:
            await self._auth_headers()  # fetch or renew the token before taking a slot...
            if pace is not None and (waiting := pace()) is not None:
                await waiting
            auth = await self._auth_headers()  # ...so this is instant and the slot is not wasted
        except TokenUnavailable as exc:
            return _token_unavailable(exc)
        attempt = await self._request(method, url, data, auth)
        if attempt.verdict is Verdict.AUTH and attempt.http_status == 401 and self.token:
            self.token.invalidate(auth)  # renew once: the token may have expired early
            try:
                auth = await self._auth_headers()
            except TokenUnavailable as exc:
                return replace(_token_unavailable(exc), renewed=True)
            try:
                if pace is not None and (waiting := pace()) is not None:
                    await waiting
            except Exception:  # the run halted before the second request: the 401 stands
                return attempt
            attempt = replace(await self._request(method, url, data, auth), renewed=True)
        return attempt

    async def _request(self, method: str, url: URL, data: bytes, auth: dict[str, str]) -> Attempt:
        headers = None if auth is self._session_sends else {**JSON_HEADERS, **auth}
        try:
            async with self.session.request(method, url, data=data, headers=headers,
                                            proxy_headers=self._proxy_headers) as response:
                body = await response.read()
                refused_by_proxy(self.proxy, response.status, self.api.base_url)  # a plain http API's proxy
                return classify(response.status, body, response.headers.get("Content-Type", ""),
                                response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorCertificateError as exc:  # no row can get past it
            raise RunAborted(untrusted_certificate(exc)) from None
        except aiohttp.ConnectionTimeoutError:  # before asyncio.TimeoutError: a subclass
            return _unreachable(cannot_connect(self.api.base_url, "no connection within connect_timeout_seconds",
                                               self.proxy))
        except aiohttp.ClientProxyConnectionError as exc:  # before ClientConnectorError: a subclass
            return _unreachable(proxy_unreachable(self.proxy, connect_cause(exc)))
        except aiohttp.ClientHttpProxyError as exc:  # the proxy answered CONNECT with an error
            refused_by_proxy(self.proxy, exc.status, self.api.base_url, tunnel=True)
            return _unreachable(tunnel_failed(self.proxy, exc.status, self.api.base_url))
        except aiohttp.ClientConnectorError as exc:
            return _unreachable(cannot_connect(self.api.base_url, connect_cause(exc), self.proxy))
        except aiohttp.SocketTimeoutError:
            return _in_doubt("no answer within read_timeout_seconds")
        except TimeoutError:
            return _in_doubt("no answer within timeout_seconds")
        except (aiohttp.ClientError, OSError) as exc:
            # The request was written (or partly written) and no full answer came back.
            return _in_doubt(_network_message(exc))


def untrusted_certificate(exc: aiohttp.ClientConnectorCertificateError) -> str:
    """The run stops at the first TLS handshake that fails verification (nothing was sent)."""
    reason = getattr(exc.certificate_error, "verify_message", None) or str(exc.certificate_error)
    return (f"the API's TLS certificate ({exc.host}) is not trusted: {reason}. If a private CA or a"
            " TLS-inspecting proxy signs it, trust its CA certificates with --ca-bundle FILE"
            " ([api] ca_bundle); nothing was sent")


def _unreachable(what: str) -> Attempt:
    """Nothing reached the API (`what`: cannot_connect's message, or the proxy's failure)."""
    return Attempt(Verdict.NETWORK, message=f"not sent: {what}", sent=False, unreachable=True)


def cannot_connect(base_url: str, cause: str, proxy: Proxy | None = None) -> str:
    """Names the host as configured (its real scheme), and the proxy on the way."""
    url = URL(base_url)
    through = f" through {proxy.describe()}" if proxy else ""
    return f"cannot connect to {url.scheme}://{url.host}:{url.port}{through} ({cause})"


def proxy_unreachable(proxy: Proxy | None, cause: str) -> str:
    named = proxy.describe() if proxy else "the proxy"
    return f"cannot connect to {named} ({cause}): check the proxy's host and port, and that it is up"


def tunnel_failed(proxy: Proxy | None, status: int, base_url: str) -> str:
    """The proxy answered CONNECT with an error other than a refusal (502, 503, 504: it could not
    reach the API)."""
    named = proxy.describe() if proxy else "the proxy"
    return f"{named} could not open a connection to {URL(base_url).host} (HTTP {status})"


def refused_by_proxy(proxy: Proxy | None, status: int, base_url: str, tunnel: bool = False) -> None:
    """RunAborted when the proxy refuses: 407, its credentials; 403 to CONNECT (`tunnel`), the
    API's host (a 403 through a plain http proxy may be the API's own). Nothing gets past it,
    so the run stops at once; the message names the proxy, not its password."""
    if proxy is None:
        return
    if tunnel and status == 403:
        raise RunAborted(f"{proxy.describe()} refused to connect to {URL(base_url).host} (HTTP 403): ask for"
                         " the host to be allowed through it, or reach it directly (NO_PROXY); nothing was sent")
    if status != 407:
        return
    if proxy.user:
        raise RunAborted(f"{proxy.describe()} refused its credentials (HTTP 407 Proxy Authentication"
                         f" Required): check the user in {proxy.origin} and the password"
                         f" ({PROXY_PASSWORD_ENV}, or in the URL); nothing was sent")
    raise RunAborted(f"{proxy.describe()} asks for credentials (HTTP 407 Proxy Authentication Required):"
                     f" give the user in the proxy URL (http://user@host:port) and the password in"
                     f" {PROXY_PASSWORD_ENV}; nothing was sent")


def proxy_authorization(proxy: Proxy | None) -> dict[str, str]:
    """The Proxy-Authorization header, when the proxy has credentials (aiohttp's proxy_auth is
    deprecated, and its proxy_headers reach only a CONNECT): see tunnel_headers."""
    if proxy is None or not proxy.user:
        return {}
    pair = f"{proxy.user}:{proxy.password.reveal()}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


def tunnel_headers(api: ApiSettings, proxy: Proxy | None) -> dict[str, str] | None:
    """An https API is reached through CONNECT: the credentials go with the CONNECT only
    (proxy_headers), never inside the tunnel to the API. A plain http API's requests go to the
    proxy whole, so they carry the header themselves (the session's headers)."""
    return (proxy_authorization(proxy) or None) if api.base_url.startswith("https:") else None


def connect_cause(exc: aiohttp.ClientConnectorError) -> str:
    """The OS's reason without aiohttp's wrapping (which says `ssl:default` even for http)."""
    error = exc.os_error
    if isinstance(error, ssl.SSLError):  # its errno is the TLS library's, not the OS's
        return f"TLS: {error.reason or error}"
    if isinstance(error, OSError) and error.errno and error.errno > 0:
        return os.strerror(error.errno)  # "Connection refused", not "Connect call failed (...)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # a DNS failure: "Name or service not known"
    return str(error) or exc.__class__.__name__


def _in_doubt(what: str) -> Attempt:
    return Attempt(Verdict.NETWORK, message=f"sent, no answer ({what}): the update may or may not"
                   " have been applied", in_doubt=True)


def _token_unavailable(exc: TokenUnavailable) -> Attempt:
    verdict = Verdict.NETWORK if exc.status is None else Verdict.RETRY
    message = f"not sent: {exc}" if exc.unreachable else str(exc)
    return Attempt(verdict, exc.status, message=message, retry_after=exc.retry_after, sent=False,
                   unreachable=exc.unreachable)


def _encoded(value: str) -> str:
    """Percent-encode a query value (an email's @ too); plain digits, the common case, as they are."""
    return value if value.isascii() and value.isalnum() else quote(value, safe="")


def _network_message(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}" if text != exc.__class__.__name__ else text
