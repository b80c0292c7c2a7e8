"""A pre-flight check of a setup, like `dbt debug`: an operator runs it before the nightly run.

A nightly run that stops at 2 a.m. on a wrong password, a dead host or an untrusted
certificate costs a night. `check_setup` tries what a run needs, in the order a run needs
it, with the run's own code and settings (load_config, the trust of send/tls, the client's
session and OAuth token), and says in one line per step what passed and what to fix.

It changes nothing: its one API request is a GET lookup of a customer who does not exist.
It never raises and never prints (every problem is a failed step), and neither the secret
nor its length appears in what it returns.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from typing import Any, Literal, NamedTuple, TypeVar

import aiohttp
from yarl import URL

from .config import INSECURE_WARNING, PASSWORD_ENV, PROXY_PASSWORD_ENV, Config, load_config
from .errors import BatchUpdaterError, ConfigError, RunAborted
from .rows.payload import Lookup
from .send.answers import Attempt, Verdict, classify
from .send.client import (
    LOOKUP_PATH,
    ApiClient,
    TokenUnavailable,
    cannot_connect,
    connect_cause,
    untrusted_certificate,
)
from .send.tls import Proxy, proxy_for, ssl_argument

__all__ = ["STEP_NAMES", "CheckStep", "check_setup"]

Status = Literal["ok", "fail", "skip"]
SKIPPED = "(an earlier step failed)"
_LABELS = {"ok": "ok", "fail": "FAIL", "skip": "skip"}
# A value valid for each kind of identifier that is no one's: a mobile number no operator
# assigns (Indian mobile numbers start with 6 to 9), an address in a reserved domain (RFC 2606).
PROBE_VALUES = {"mobile": "910000000000", "email": "batch-updater-check@example.invalid",
                "externalId": "batch-updater-check-0000000000"}
NOT_FOUND = "8015"  # the lookup's answer for the probe: "Customer not found for the given identifiers"
# Stands in for the password while the rest of the config is checked; never sent.
_PLACEHOLDER = "placeholder: the password has its own step"
T = TypeVar("T")
MIN_SECRET = 4  # characters; see _withheld


@dataclass(frozen=True)
class CheckStep:
    """One step's verdict: "ok", "fail", or "skip" (an earlier step it needs failed)."""

    name: str
    status: Status
    detail: str
    seconds: float | None = None  # how long the step took (answer time: the lookup's); None if skipped

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def line(self) -> str:
        return f"{_LABELS[self.status]:<6}{self.name:<12}{self.detail}"


def check_setup(config_path: str | os.PathLike | None, overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> list[CheckStep]:
    """Every step of STEP_NAMES, in order; a step whose prerequisite failed is skipped.

    `overrides` and `environ` are load_config's (None: os.environ). The setup passes when
    every step is ok: a skipped step does not pass.
    """
    setup = _Setup(config_path, overrides, os.environ if environ is None else environ)
    steps: dict[str, CheckStep] = {}
    for name, check, needs in _PLAN:
        if all(steps[need].ok for need in needs):
            steps[name] = _run(name, check, setup)
        else:
            steps[name] = CheckStep(name, "skip", SKIPPED)
    secret = setup.config.api.password.reveal() if setup.config else ""
    return [_withheld(step, secret) for step in steps.values()]


def _withheld(step: CheckStep, secret: str) -> CheckStep:
    """A second line of defence (no message should hold the secret): a detail that does is
    withheld whole, so nothing hints at it. A secret of a few characters would match
    ordinary words: it is the password that is wrong then, not the output."""
    if len(secret) < MIN_SECRET or secret not in step.detail:
        return step
    return replace(step, detail="(withheld: the message would show the password)")


class _Result(NamedTuple):
    status: Status
    detail: str
    seconds: float | None = None  # None: the step's own duration


@dataclass
class _Setup:
    """What the steps learn, for the steps after them."""

    path: str | os.PathLike | None
    overrides: Mapping[str, Any] | None
    environ: Mapping[str, str]
    settings: Config | None = None  # valid, with a placeholder password: for the steps that need none
    config: Config | None = None    # with the real password, once the password step passed
    answered: list[tuple[str, float]] = field(default_factory=list)  # (request, seconds to its answer)
    timed_out: str = ""             # why a request got no answer in time


def _run(name: str, check: Callable[[_Setup], _Result], setup: _Setup) -> CheckStep:
    started = time.monotonic()
    try:
        outcome = check(setup)
    except Exception as exc:  # a check reports what went wrong; it never raises
        outcome = _Result("fail", f"unexpected error: {exc.__class__.__name__}: {exc}")
    if outcome.status == "skip":
        return CheckStep(name, "skip", outcome.detail)
    seconds = time.monotonic() - started if outcome.seconds is None else outcome.seconds
    return CheckStep(name, outcome.status, outcome.detail, seconds)


# --- config and password -------------------------------------------------------------------

def _check_config(setup: _Setup) -> _Result:
    """Everything but the password, which load_config cannot miss with the variable set."""
    environ = {**setup.environ, PASSWORD_ENV: _PLACEHOLDER}
    try:
        setup.settings = load_config(setup.path, overrides=setup.overrides, environ=environ)
    except ConfigError as exc:
        return _Result("fail", "; ".join(exc.problems))
    valid = f"{os.fspath(setup.path)} is valid" if setup.path else "the settings are valid"
    warnings = [f"warning: {w}" for w in setup.settings.warnings if w != INSECURE_WARNING]  # tls says it
    return _Result("ok", "; ".join([valid, *warnings]))


def _check_password(setup: _Setup) -> _Result:
    """The same load with the real environment: only the password's problems are left."""
    try:
        config = load_config(setup.path, overrides=setup.overrides, environ=setup.environ)
    except ConfigError as exc:
        return _Result("fail", "; ".join(exc.problems))
    origin = _password_origin(config, setup.environ)
    if not config.api.password:
        return _Result("fail", f"{origin} is empty")
    setup.config = config
    what = "the OAuth secret" if config.api.auth == "oauth" else "the password"
    return _Result("ok", f"{what} comes from {origin}")


def _password_origin(config: Config, environ: Mapping[str, str]) -> str:
    """Where load_config took it from, in its order (config._password)."""
    if environ.get(PASSWORD_ENV):
        return PASSWORD_ENV
    if config.api.password_file:
        return f"[api] password_file {config.api.password_file}"
    return f"[api] password in {config.path}"


# --- dns, port, tls --------------------------------------------------------------------------

def _endpoint(setup: _Setup) -> tuple[str, int, float]:
    assert setup.settings is not None  # the config step passed
    url = URL(setup.settings.api.base_url)
    return url.host or "", url.port or 0, setup.settings.limits.connect_timeout_seconds


def _first_hop(setup: _Setup) -> tuple[str, int, float, Proxy | None]:
    """Where this machine connects: the proxy when the run goes through one (which then
    resolves and reaches the API host itself), else the API."""
    assert setup.settings is not None  # the config step passed
    host, port, timeout = _endpoint(setup)
    proxy = proxy_for(setup.settings.api, setup.environ)
    if proxy is None:
        return host, port, timeout, None
    url = URL(proxy.url)
    return url.host or "", url.port or 0, timeout, proxy


def _via(proxy: Proxy | None) -> str:
    return f" ({proxy.describe()})" if proxy else ""


def _check_dns(setup: _Setup) -> _Result:
    try:
        host, port, timeout, proxy = _first_hop(setup)
    except RunAborted as exc:  # a proxy URL that is not one
        return _Result("fail", str(exc))
    if not host:
        return _Result("fail", "[api] base_url names no host")
    if _is_ip_address(host):
        return _Result("ok", f"{host} is an IP address: nothing to resolve{_via(proxy)}")
    try:
        found = _within(timeout, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except TimeoutError:
        return _Result("fail", f"{host} did not resolve within {timeout:g} s (connect_timeout_seconds):"
                               " check this machine's DNS")
    except OSError as exc:
        where = proxy.origin if proxy else "[api] base_url"
        return _Result("fail", f"cannot resolve {host} ({exc.strerror or exc}): check the host in"
                               f" {where} and this machine's DNS")
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    more = f" (and {len(addresses) - 1} more)" if len(addresses) > 1 else ""
    return _Result("ok", f"{host} resolves to {addresses[0]}{more}{_via(proxy)}")


def _is_ip_address(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def _within(seconds: float, call: Callable[[], T]) -> T:
    """call() in a daemon thread: getaddrinfo takes no timeout, and a stuck one must not hold the process."""
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name="check-dns", daemon=True).start()
    return future.result(timeout=seconds)


def _check_port(setup: _Setup) -> _Result:
    host, port, timeout, proxy = _first_hop(setup)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        if proxy:
            return _Result("fail", f"{proxy.describe()} refused the connection: nothing listens there;"
                                   f" check the port in {proxy.origin} and that the proxy is up")
        return _Result("fail", f"{host}:{port} refused the connection: nothing listens there; check the"
                               " port in [api] base_url and that the API (or the proxy before it) is up")
    except TimeoutError:
        return _Result("fail", f"no connection to {host}:{port} within {timeout:g} s (connect_timeout_seconds):"
                               " check a firewall, proxy or VPN on the way, and [api] base_url")
    except OSError as exc:
        return _Result("fail", f"cannot connect to {host}:{port} ({exc.strerror or exc}): check the"
                               " network and [api] base_url")
    return _Result("ok", f"{host}:{port} accepts connections{_via(proxy)}")


def _check_tls(setup: _Setup) -> _Result:
    assert setup.settings is not None  # the config step passed
    api, (host, port, timeout) = setup.settings.api, _endpoint(setup)
    if URL(api.base_url).scheme == "http":
        return _Result("ok", "plain http: no TLS (fine for the sandbox, not for production)")
    proxy = _first_hop(setup)[3]
    try:
        version, until = _handshake(host, port, timeout, _client_context(ssl_argument(api)), proxy)
    except ProxyRefused as exc:
        return _Result("fail", str(exc))
    except ssl.SSLCertVerificationError as exc:
        return _Result("fail", _untrusted(host, api.ca_bundle, exc))
    except ssl.SSLError as exc:
        return _Result("fail", f"TLS handshake with {host}:{port} failed ({exc.reason or exc}): does that"
                               " port serve https? check the scheme and port in [api] base_url")
    except TimeoutError:
        return _Result("fail", f"no TLS handshake with {host}:{port} within {timeout:g} s (connect_timeout_seconds)")
    except OSError as exc:
        return _Result("fail", f"TLS handshake with {host}:{port} failed ({exc.strerror or exc})")
    if not api.verify_tls:
        return _Result("ok", f"{version}, but the certificate is not checked ([api] verify_tls = false or"
                             " --insecure): anyone on the way can read the credentials; trust a private CA"
                             " with --ca-bundle FILE instead")
    trust = f"[api] ca_bundle {api.ca_bundle}" if api.ca_bundle else "the system's CA certificates"
    tunnel = f", through {proxy.describe()}" if proxy else ""
    return _Result("ok", f"{version}, certificate trusted by {trust}{until}{tunnel}")


def _client_context(argument: bool | ssl.SSLContext) -> ssl.SSLContext:
    """The trust aiohttp gets from the same ssl= argument during a run."""
    if isinstance(argument, ssl.SSLContext):
        return argument
    context = ssl.create_default_context()
    if argument is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _handshake(host: str, port: int, timeout: float, context: ssl.SSLContext,
               proxy: Proxy | None = None) -> tuple[str, str]:
    """The TLS version and ", valid until <date>" (empty when the certificate is not checked)."""
    with _connected(host, port, timeout, proxy) as raw, context.wrap_socket(raw, server_hostname=host) as tls:
        version, certificate = tls.version() or "TLS", tls.getpeercert() or {}
    not_after = certificate.get("notAfter")
    if not isinstance(not_after, str):
        return version, ""
    return version, time.strftime(", valid until %Y-%m-%d", time.gmtime(ssl.cert_time_to_seconds(not_after)))


class ProxyRefused(Exception):
    """The proxy answered CONNECT with something other than 200."""


def _connected(host: str, port: int, timeout: float, proxy: Proxy | None) -> socket.socket:
    """A socket to the API: direct, or a CONNECT tunnel through the proxy as a run makes it."""
    if proxy is None:
        return socket.create_connection((host, port), timeout=timeout)
    url = URL(proxy.url)
    raw = socket.create_connection((url.host or "", url.port or 0), timeout=timeout)
    try:
        raw.sendall(_connect_request(host, port, proxy))
        status = _connect_status(raw)
    except BaseException:
        raw.close()
        raise
    if status != 200:
        raw.close()
        raise ProxyRefused(_refusal(proxy, status, host, port))
    return raw


def _connect_request(host: str, port: int, proxy: Proxy) -> bytes:
    lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
    if proxy.user:
        token = base64.b64encode(f"{proxy.user}:{proxy.password.reveal()}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _connect_status(raw: socket.socket) -> int:
    """The status of the proxy's answer, read up to its blank line (nothing of the tunnel after it)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        block = raw.recv(1)  # byte by byte: what follows the headers belongs to TLS
        if not block:
            break
        answer += block
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _refusal(proxy: Proxy, status: int, host: str, port: int) -> str:
    if status == 407:
        return (f"{proxy.describe()} refused our credentials (HTTP 407): check the proxy's user and"
                f" {PROXY_PASSWORD_ENV}")
    if status:
        return f"{proxy.describe()} refused to open a tunnel to {host}:{port} (HTTP {status})"
    return f"{proxy.describe()} did not answer CONNECT as an HTTP proxy: check {proxy.origin}"


def _untrusted(host: str, ca_bundle: os.PathLike | None, exc: ssl.SSLCertVerificationError) -> str:
    reason = exc.verify_message or exc.reason or str(exc)
    if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        hint = "check the host in [api] base_url: the certificate names another"
    elif exc.verify_code in (9, 10):  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
        hint = "the API's certificate must be renewed, or this machine's clock is wrong"
    else:
        hint = "pass --ca-bundle FILE (the CA that signed it)"
        if ca_bundle:
            hint = f"[api] ca_bundle {os.fspath(ca_bundle)} does not hold the CA that signed it: {hint}"
    return f"the certificate of {host} is not trusted ({reason}): {hint}"


# --- credentials and answer time -------------------------------------------------------------

def _check_credentials(setup: _Setup) -> _Result:
    assert setup.config is not None  # the password step passed
    return asyncio.run(_credentials(setup, setup.config))


async def _credentials(setup: _Setup, config: Config) -> _Result:
    """The run's own session and token code, then one lookup GET: nothing is changed."""
    client = ApiClient.open(config.api, config.limits, setup.environ)
    try:
        if client.token:
            await _timed(setup, "token", client.token.header())
        status, body, content_type = await _timed(setup, "lookup", _lookup(client))
    except Exception as exc:  # what a run would meet too: a refused key, the network, a timeout
        failure = _request_failure(exc, config)
        if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
            setup.timed_out = failure
        return _Result("fail", failure)
    finally:
        await client.close()
    return _judged(classify(status, body, content_type))


async def _timed(setup: _Setup, request: str, answer: Awaitable[T]) -> T:
    started = time.monotonic()
    result = await answer
    setup.answered.append((request, time.monotonic() - started))
    return result


async def _lookup(client: ApiClient) -> tuple[int, bytes, str]:
    """GET the probe customer, as a run's requests go (credentials, proxy)."""
    api = client.api
    lookup = Lookup(api.source, api.identifier_name, PROBE_VALUES[api.identifier_name], api.account_id)
    return await client.get(URL(api.base_url.rstrip("/") + LOOKUP_PATH).with_query(lookup.query()))


def _request_failure(exc: Exception, config: Config) -> str:
    limits, base_url = config.limits, config.api.base_url
    if isinstance(exc, (RunAborted, TokenUnavailable)):  # the token code's own words
        return str(exc)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return untrusted_certificate(exc)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # before TimeoutError: a subclass
        return cannot_connect(base_url, f"no connection within connect_timeout_seconds"
                                         f" ({limits.connect_timeout_seconds:g} s)")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return cannot_connect(base_url, connect_cause(exc))
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return f"no answer within read_timeout_seconds ({limits.read_timeout_seconds or 0:g} s)"
    if isinstance(exc, TimeoutError):
        return f"no answer within timeout_seconds ({limits.timeout_seconds:g} s)"
    return f"the lookup failed: {exc.__class__.__name__}: {exc}"


def _judged(attempt: Attempt) -> _Result:
    """Credentials pass unless refused; the answer must still come from the API."""
    status, said = attempt.http_status, _said(attempt)
    if attempt.verdict is Verdict.AUTH:
        return _Result("fail", f"credentials refused ({said}): check [api] username and the password")
    if attempt.verdict is Verdict.FATAL or attempt.in_doubt:  # 404/405/415, or 2xx that is not JSON
        return _Result("fail", f"the base URL answers, but not as the Capillary API (HTTP {status}):"
                               " check [api] base_url")
    if attempt.verdict in (Verdict.THROTTLED, Verdict.RETRY):
        return _Result("fail", f"credentials not checked: the API answered {said}; try again later")
    if attempt.verdict is Verdict.SUCCESS:
        return _Result("ok", f"accepted (HTTP {status})")
    if attempt.code == NOT_FOUND:
        return _Result("ok", "accepted: the probe lookup (a customer who does not exist) was answered"
                             f" \"not found\" ({attempt.code}, HTTP {status}), as expected")
    if attempt.code:
        return _Result("ok", f"accepted (HTTP {status}, error {attempt.code}: {attempt.message})")
    return _Result("ok", f"accepted ({said})")


def _said(attempt: Attempt) -> str:
    """"HTTP 401: <the API's message>", or the summary of an answer without errors[]."""
    return f"HTTP {attempt.http_status}: {attempt.message}" if attempt.code else attempt.message


def _check_state(setup: _Setup) -> _Result:
    """Where the jobs' state is kept: a run on PostgreSQL state stops at once without it."""
    assert setup.settings is not None  # the config step passed
    state = setup.settings.state
    if not state.url:
        return _Result("ok", f"SQLite files in {setup.settings.output.dir}, the default")
    from .state.stores import need_driver

    try:
        need_driver()
        from .state.postgres import probe

        return _Result("ok", probe(state))
    except BatchUpdaterError as exc:
        return _Result("fail", str(exc))


def _check_output(setup: _Setup) -> _Result:
    """An object-storage output folder's bucket answers with these credentials (nothing is
    written: the uploads at the end of a run are the first writes)."""
    assert setup.settings is not None  # the config step passed
    output = setup.settings.output
    if not output.url:
        return _Result("ok", f"reports in {output.dir}")
    from .storage import bucket_path, filesystem, storage_errors

    bucket = output.url.split("://", 1)[0] + "://" + bucket_path(output.url).split("/", 1)[0]
    try:
        with storage_errors(bucket):
            filesystem(output.url, setup.settings.storage).ls(bucket, detail=False)
    except BatchUpdaterError as exc:  # also a missing package, naming the extra to install
        return _Result("fail", str(exc))
    return _Result("ok", f"{bucket} answers; reports are staged in {output.dir} and uploaded to {output.url}"
                         " when each run ends")


def _check_answer_time(setup: _Setup) -> _Result:
    if setup.timed_out:
        return _Result("fail", setup.timed_out)
    if not setup.answered:
        return _Result("skip", "(no request was answered)")
    times = ", ".join(f"{request} answered in {seconds * 1000:.0f} ms" for request, seconds in setup.answered)
    return _Result("ok", times, setup.answered[-1][1])


# name, check, the steps it needs
_PLAN: tuple[tuple[str, Callable[[_Setup], _Result], tuple[str, ...]], ...] = (
    ("config", _check_config, ()),
    ("password", _check_password, ("config",)),
    ("dns", _check_dns, ("config",)),
    ("port", _check_port, ("dns",)),
    ("tls", _check_tls, ("port",)),
    ("credentials", _check_credentials, ("password", "tls")),
    ("answer time", _check_answer_time, ("password", "tls")),
    ("state", _check_state, ("config",)),
    ("output", _check_output, ("config",)),
)
STEP_NAMES = tuple(name for name, _, _ in _PLAN)
