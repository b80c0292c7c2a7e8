"""Everything a running sandbox knows: settings, customers, tokens, limits, faults, record."""

from __future__ import annotations

import itertools
import random

from .auth import Authenticator
from .customers import CsvCustomers, CustomerStore, SeededCustomers
from .ratelimit import RollingWindow
from .record import RecordedRequest, Recorder
from .settings import Faults, RateLimit, SandboxSettings

# A customer being processed is busy by its id and by each identifier that finds it, so
# that an add (which has no id yet) and an update of the same customer collide.
BusyKey = int | tuple[str, str]


class SandboxState:
    def __init__(self, settings: SandboxSettings):
        self.settings = settings
        self.faults: Faults = settings.faults  # tests swap it at runtime
        self.auth = Authenticator(settings.till_code, settings.password, settings.oauth_key,
                                  settings.oauth_secret, settings.token_ttl_seconds)
        source = (CsvCustomers(settings.customers_csv) if settings.customers_csv
                  else SeededCustomers(settings.customers))
        self.customers = CustomerStore(source)
        self.limiter = _rolling_window(settings.rate_limit)
        self.create_limiter = _rolling_window(settings.create_rate_limit)
        self.recorder = Recorder(keep=settings.record)
        self.busy: set[BusyKey] = set()  # customers whose update or add is being processed
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

    def throttle(self, credential: str, now: float, budget: str = "update") -> float | None:
        """None if the budget's rate limit ("update" or "create") admits the request, else
        the seconds until it would."""
        limiter = self.create_limiter if budget == "create" else self.limiter
        return limiter.admit(credential, now) if limiter else None

    def hold(self, keys: set[BusyKey]) -> bool:
        """Marks the keys busy; False, marking nothing, if one of them already is."""
        if not self.busy.isdisjoint(keys):
            return False
        self.busy |= keys
        return True

    def release(self, keys: set[BusyKey]) -> None:
        self.busy -= keys

    def stats(self, window_seconds: float | None = None) -> dict:
        """Counts from the record; each budget's window defaults to its rate limit's (else
        a minute)."""
        def window(limiter: RollingWindow | None) -> float:
            if window_seconds is not None:
                return window_seconds
            return limiter.window_seconds if limiter else 60.0

        return self.recorder.stats(window(self.limiter), window(self.create_limiter))


def _rolling_window(limit: RateLimit | None) -> RollingWindow | None:
    return RollingWindow(limit.limit, limit.window_seconds) if limit else None
