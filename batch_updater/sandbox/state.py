"""Everything a running sandbox knows: settings, customers, tokens, limits, faults, record."""

from __future__ import annotations

import itertools
import random

from .auth import Authenticator
from .customers import CsvCustomers, CustomerStore, SeededCustomers
from .ratelimit import RollingWindow
from .record import RecordedRequest, Recorder
from .settings import Faults, SandboxSettings


class SandboxState:
    def __init__(self, settings: SandboxSettings):
        self.settings = settings
        self.faults: Faults = settings.faults  # tests swap it at runtime
        self.auth = Authenticator(settings.till_code, settings.password, settings.oauth_key,
                                  settings.oauth_secret, settings.token_ttl_seconds)
        source = (CsvCustomers(settings.customers_csv) if settings.customers_csv
                  else SeededCustomers(settings.customers))
        self.customers = CustomerStore(source)
        limit = settings.rate_limit
        self.limiter = RollingWindow(limit.limit, limit.window_seconds) if limit else None
        self.recorder = Recorder(keep=settings.record)
        self.busy: set[int] = set()  # customers whose update is being processed
        self._rng = random.Random(settings.seed)
        self._seq = itertools.count(1)

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.recorder.requests

    @property
    def applied_count(self) -> int:
        return self.recorder.applied

    def customer(self, customer_id: int) -> dict:
        """The customer's current state, updates included; KeyError if there is none."""
        customer = self.customers.get(customer_id)
        if customer is None:
            raise KeyError(customer_id)
        return customer

    def next_seq(self) -> int:
        return next(self._seq)

    def draw_fault(self) -> str | None:
        return self.faults.pick(self._rng.random())

    def throttle(self, credential: str, now: float) -> float | None:
        """None if the rate limit admits the request, else the seconds until it would."""
        return self.limiter.admit(credential, now) if self.limiter else None

    def stats(self, window_seconds: float | None = None) -> dict:
        """Counts from the record; the window defaults to the rate limit's (else a minute)."""
        if window_seconds is None:
            window_seconds = self.limiter.window_seconds if self.limiter else 60.0
        return self.recorder.stats(window_seconds)
