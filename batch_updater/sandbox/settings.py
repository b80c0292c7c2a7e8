"""Configuration of the sandbox server: what the fake org looks like and how it misbehaves."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RateLimit:
    """A strict rolling window per credential: at most `limit` accepted requests
    started within any `window_seconds`."""

    limit: int
    window_seconds: float = 60.0
    retry_after: bool = True


@dataclass(frozen=True)
class Faults:
    """Per-request probabilities of injected failures on customer routes.

    One uniform draw per authenticated request picks at most one fault, tried in field
    order, so the rates should add up to at most 1.
    """

    error_500: float = 0.0
    error_502: float = 0.0
    error_503: float = 0.0
    error_504: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    slow: float = 0.0
    burst_429: float = 0.0
    slow_seconds: float = 30.0

    def pick(self, draw: float) -> str | None:
        """The fault that a uniform draw in [0, 1) selects, or None."""
        edge = 0.0
        for name in FAULT_NAMES:
            edge += getattr(self, name)
            if draw < edge:
                return name
        return None


FAULT_NAMES = ("error_500", "error_502", "error_503", "error_504",
               "drop_before", "drop_after", "slow", "burst_429")


@dataclass
class SandboxSettings:
    host: str = "127.0.0.1"
    port: int = 0
    till_code: str = "demo.till"
    password: str = "demo-password"
    oauth_key: str = "demo-key"
    oauth_secret: str = "demo-secret"
    token_ttl_seconds: float = 300.0
    customers: int = 10_000
    customers_csv: str | None = None
    extended_fields: tuple[str, ...] = ("city", "gender", "dateOfBirth")
    custom_fields: tuple[str, ...] = ("preferred_language", "newsletter")
    programs: tuple[int, ...] = (699, 700)
    # The real status of business errors is unknown (400, 200 or 404 are plausible).
    business_error_status: int = 400
    processing_seconds: float = 0.0
    latency_seconds: float = 0.0
    rate_limit: RateLimit | None = None
    # The Add Customer API (POST /v2/customers) has its own budget per credential, apart
    # from the update's: Capillary's EU defaults are 100/min for adds, 50/min for updates.
    create_rate_limit: RateLimit | None = None
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    record: bool = True
