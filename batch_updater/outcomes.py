"""What happened to one input row: the value that the pool, journal and reports hand on."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    SUCCESS = "success"   # the API applied the update (HTTP 200, no errors[])
    ERROR = "error"       # a failure; the row is in errors.csv (see RowOutcome.rerun)
    SKIPPED = "skipped"   # left out by design (blank row, duplicate policy, unchanged)


class Stage(str, Enum):
    VALIDATION = "validation"
    API = "api"
    CREATE = "create"     # upsert: the Add Customer API refused the row (after the update's 8015)
    NETWORK = "network"
    NOT_SENT = "not_sent"


UPDATED = "updated"   # a success's action: the update applied
CREATED = "created"   # upsert: the customer was added


@dataclass(frozen=True, slots=True)
class RowOutcome:
    row: int
    status: Status
    stage: Stage | None = None
    code: str = ""
    message: str = ""
    http_status: int | None = None
    attempts: int = 0
    customer_id: str = ""
    warnings: str = ""
    identifier: str = ""
    in_doubt: bool = False   # some attempt was sent and got no answer
    # The failure is the run's, not the row's (credentials, network, 5xx, a stop mid-retry):
    # the next run of the job sends the row again. Validation errors and the API's
    # refusals of the row itself (8015, 1046...) stay settled.
    rerun: bool = False
    action: str = ""         # a success's: UPDATED or CREATED
    # Applied, but the API warned (91015: a field dropped...): --only-changed must not take the
    # row's values as the customer's. Known while sending only; the journal does not keep it.
    api_warned: bool = False
