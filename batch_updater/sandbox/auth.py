"""Capillary's two authentication schemes: Basic (till code + MD5 of the password) and
OAuth tokens issued by the sandbox itself."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Mapping


def basic_auth_header(till_code: str, password: str) -> str:
    """The documented rule: the password is MD5-hashed (lowercase hex) before encoding."""
    digest = hashlib.md5(password.encode()).hexdigest()
    return "Basic " + base64.b64encode(f"{till_code}:{digest}".encode()).decode()


class AuthError(Exception):
    """Authentication failed; the message says why."""


class Authenticator:
    """Checks a request's headers and issues OAuth tokens."""

    def __init__(self, till_code: str, password: str, oauth_key: str, oauth_secret: str,
                 token_ttl_seconds: float, clock=time.monotonic):
        self._basic = basic_auth_header(till_code, password)
        self._till_code = till_code
        self._key, self._secret = oauth_key, oauth_secret
        self.ttl = token_ttl_seconds
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (key, expiry)

    def issue(self, key: object, secret: object) -> str:
        if key != self._key or secret != self._secret:
            raise AuthError("Invalid key or secret")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (self._key, self._clock() + self.ttl)
        return token

    def credential(self, headers: Mapping[str, str]) -> str:
        """The till code or OAuth key that authenticates these headers."""
        token = headers.get("X-CAP-API-OAUTH-TOKEN")
        if token is not None:
            return self._check_token(token)
        authorization = headers.get("Authorization")
        if authorization is None:
            raise AuthError("Missing credentials: send Authorization or X-CAP-API-OAUTH-TOKEN")
        if not secrets.compare_digest(authorization.encode(), self._basic.encode()):
            raise AuthError("Invalid credentials: wrong till code or password")
        return self._till_code

    def _check_token(self, token: str) -> str:
        key, expiry = self._tokens.get(token, (None, 0.0))
        if key is None:
            raise AuthError("Invalid OAuth token")
        if self._clock() >= expiry:
            raise AuthError("OAuth token expired")
        return key

