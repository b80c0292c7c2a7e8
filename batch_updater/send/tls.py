"""The way to the API: TLS verification (what aiohttp's `ssl=` argument gets) and the HTTP
proxy, if any.

Certificates are verified by default against the system's CA store; `[api] ca_bundle`
(`--ca-bundle`) trusts the CAs of one PEM file instead (a private CA, a TLS-inspecting
proxy); `[api] verify_tls = false` (`--insecure`) turns verification off, which the
config loader and the client both warn about.

A proxy is `[api] proxy`, else HTTPS_PROXY (for an https base URL) or HTTP_PROXY, in either
case, as curl and pip read them; NO_PROXY names hosts reached directly, whichever proxy is
set. Through the proxy an https API gets a CONNECT tunnel, and TLS inside it is verified
with the same settings, so `ca_bundle` still applies. The proxy's password
(BATCH_UPDATER_PROXY_PASSWORD, else the URL's) goes only into the Proxy-Authorization header:
messages show the proxy as `masked_url` does (http://***@proxy:3128).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from urllib.parse import unquote, urlsplit

from ..config import INSECURE_WARNING, ApiSettings, Secret, masked_url
from ..errors import RunAborted


def ssl_argument(api: ApiSettings) -> bool | ssl.SSLContext:
    """True: aiohttp's default verification · an SSLContext trusting the CA bundle · False: none."""
    if not api.verify_tls:
        return False
    if api.ca_bundle:
        return ssl.create_default_context(cafile=str(api.ca_bundle))
    return True


def insecure_warning(api: ApiSettings) -> str | None:
    return None if api.verify_tls else INSECURE_WARNING


@dataclass(frozen=True)
class Proxy:
    url: str                  # scheme://host:port, without credentials: what aiohttp connects to
    origin: str               # "[api] proxy" or the environment variable it came from
    user: str | None = None
    password: Secret = field(default_factory=lambda: Secret(""), repr=False)
    shown: str = ""           # the URL as messages show it (credentials masked)

    def describe(self) -> str:
        return f"the proxy {self.shown} ({self.origin})"


def proxy_for(api: ApiSettings, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy requests to the API go through, or None to connect directly."""
    environ = os.environ if environ is None else environ
    target = urlsplit(api.base_url)
    scheme = target.scheme
    no_proxy = _variable(environ, "no_proxy")
    port = target.port or {"https": 443, "http": 80}.get(scheme)  # NO_PROXY=host:443 names the default port
    if no_proxy and bypassed(target.hostname or "", port, no_proxy):
        return None
    if api.proxy:
        return _proxy(api.proxy, "[api] proxy", api.proxy_password)
    name = "https_proxy" if scheme == "https" else "http_proxy"
    found = _variable(environ, name)
    return _proxy(found, _named(environ, name), api.proxy_password) if found else None


def _proxy(url: str, origin: str, password: Secret) -> Proxy:
    parts = urlsplit(url if "://" in url else "http://" + url)  # curl reads host:port as http
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RunAborted(f"{origin} {masked_url(url)!r} is not an HTTP proxy URL (http://host:port):"
                         " the client speaks HTTP to proxies only (not SOCKS); nothing was sent")
    host = parts.hostname or ""
    address = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    user = unquote(parts.username) if parts.username else None
    given = password or Secret(unquote(parts.password or ""))  # the variable first, as for [api] proxy
    return Proxy(f"{parts.scheme}://{address}{port}", origin, user, given if user else Secret(""),
                 masked_url(f"{parts.scheme}://{parts.netloc}") or "")


def bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """NO_PROXY as curl reads it: `*`, or entries separated by commas, each a host or domain
    (`example.com` and `.example.com` cover api.example.com), optionally with :port, or an IP
    address or network (10.0.0.0/8)."""
    host = host.lower().strip("[]")
    for entry in filter(None, (e.strip().lower() for e in no_proxy.split(","))):
        if entry == "*":
            return True
        name, _, wanted_port = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
        if wanted_port and str(port) != wanted_port:
            continue
        name = name.strip("[]")
        if _in_network(host, name) or host == name.lstrip(".") or host.endswith("." + name.lstrip(".")):
            return True
    return False


def _has_port(entry: str) -> bool:
    head, colon, tail = entry.rpartition(":")
    return bool(colon) and tail.isdigit() and (head.endswith("]") or ":" not in head)


def _in_network(host: str, entry: str) -> bool:
    try:
        return ip_address(host) in ip_network(entry, strict=False)
    except ValueError:
        return False


def _variable(environ: Mapping[str, str], name: str) -> str | None:
    """Lower case first, as curl and Python's urllib read them."""
    return (environ.get(name) or environ.get(name.upper()) or "").strip() or None


def _named(environ: Mapping[str, str], name: str) -> str:
    return name if environ.get(name, "").strip() else name.upper()
