"""What the sandbox saw: one immutable record per request, plus running counts that
survive when keeping every record would cost too much memory."""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

from .ratelimit import max_in_window


@dataclass(frozen=True)
class RecordedRequest:
    seq: int
    started: float  # time.monotonic() when the request arrived
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: object | None  # parsed JSON, None if absent or invalid
    credential: str | None  # till code or OAuth key; None if authentication failed
    customer_id: int | None
    status: int  # 0 when the connection was closed without an answer
    applied: bool
    outcome: str
    admitted: bool = False  # passed the rate limit, so it counts in the credential's window
    answered: float = 0.0   # time.monotonic() when the answer goes out (after any latency)
    budget: str = "update"  # the rate limit it counts against: "update", or "create" (adds)

    def to_json(self) -> dict:
        return asdict(self)


class Recorder:
    """Append-only: other threads may read `requests` while the server runs."""

    def __init__(self, keep: bool = True):
        self.requests: list[RecordedRequest] = []
        self._keep = keep
        self.statuses: Counter[int] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.applied = 0
        self._admitted: dict[tuple[str, str], array] = defaultdict(lambda: array("d"))

    def add(self, record: RecordedRequest) -> None:
        self.statuses[record.status] += 1
        self.outcomes[record.outcome] += 1
        self.applied += record.applied
        if record.admitted:
            assert record.credential is not None  # the rate limit admits only authenticated requests
            self._admitted[record.budget, record.credential].append(record.started)
        if self._keep:
            self.requests.append(record)

    def since(self, seq: int) -> list[RecordedRequest]:
        return [r for r in self.requests if r.seq > seq]

    def stats(self, window_seconds: float, create_window_seconds: float) -> dict:
        return {
            "requests": sum(self.statuses.values()),
            "applied": self.applied,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "outcomes": dict(sorted(self.outcomes.items())),
            "window_seconds": window_seconds,
            "max_in_window": self._busiest("update", window_seconds),
            "create_window_seconds": create_window_seconds,
            "create_max_in_window": self._busiest("create", create_window_seconds),
        }

    def _busiest(self, budget: str, window_seconds: float) -> dict[str, int]:
        """Each credential's most admitted requests of the budget in any window."""
        return {credential: max_in_window(starts, window_seconds)
                for (kind, credential), starts in self._admitted.items() if kind == budget}
