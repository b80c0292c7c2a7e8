"""TLS for the API connection: what aiohttp's `ssl=` argument gets from the settings.

Certificates are verified by default against the system's CA store; `[api] ca_bundle`
(`--ca-bundle`) trusts the CAs of one PEM file instead (a private CA, a TLS-inspecting
proxy); `[api] verify_tls = false` (`--insecure`) turns verification off, which the
config loader and the client both warn about.
"""

from __future__ import annotations

import ssl

from ..config import INSECURE_WARNING, ApiSettings


def ssl_argument(api: ApiSettings) -> bool | ssl.SSLContext:
    """True: aiohttp's default verification · an SSLContext trusting the CA bundle · False: none."""
    if not api.verify_tls:
        return False
    if api.ca_bundle:
        return ssl.create_default_context(cafile=str(api.ca_bundle))
    return True


def insecure_warning(api: ApiSettings) -> str | None:
    return None if api.verify_tls else INSECURE_WARNING
