"""What people read first: errors grouped by cause, warnings counted by code.

The report writer feeds every row's outcome through these while it writes the
reports, so the groups cost no extra pass; summary.json and the one-line summary
show them. Group texts never carry a cell's value (a validation message's quoted
value is left out) and identifiers in the API's messages are masked: the summary
goes to logs and chat, unlike errors.csv.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..outcomes import RowOutcome, Stage
from ..send.answers import warning_codes
from .masking import mask_text

TOP_GROUPS = 10
MESSAGE_LIMIT = 200
_QUOTED_VALUE = re.compile(r'\s*"(?:[^"]|"")*"')


@dataclass
class ErrorGroup:
    stage: str
    code: str
    message: str
    count: int = 0
    example_row: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"stage": self.stage, "code": self.code, "message": self.message, "count": self.count,
                "example_row": self.example_row}


@dataclass
class ErrorGroups:
    groups: dict[tuple[str, str, str], ErrorGroup] = field(default_factory=dict)

    def add(self, outcome: RowOutcome) -> None:
        stage = outcome.stage.value if outcome.stage else Stage.API.value
        code, message = cause_of(outcome)
        group = self.groups.get((stage, code, message))
        if group is None:
            shown = message if outcome.stage is Stage.VALIDATION else mask_text(message)  # no value left
            group = self.groups[(stage, code, message)] = ErrorGroup(stage, code, shown, example_row=outcome.row)
        group.count += 1

    def top(self, n: int = TOP_GROUPS) -> list[ErrorGroup]:
        return sorted(self.groups.values(), key=lambda g: (-g.count, g.example_row))[:n]


def cause_of(o: RowOutcome) -> tuple[str, str]:
    """What rows failing alike share: the API's code (or HTTP status) and message, or a
    validation message without the cell's value (its first problem, when there are several)."""
    if o.stage is Stage.VALIDATION:
        first = o.message.split("; ")[0]
        return "", _QUOTED_VALUE.sub("", first, count=1).strip()  # the cell's; a setting quoted later stays
    code = o.code or (f"HTTP {o.http_status}" if o.http_status else "")
    return code, o.message.strip()[:MESSAGE_LIMIT]


@dataclass
class WarningTally:
    by_code: Counter[str] = field(default_factory=Counter)
    rows: int = 0               # rows with at least one warning

    def add(self, warnings: str) -> None:
        self.rows += 1
        self.by_code.update(warning_codes(warnings))


def describe_groups(groups: list[dict], limit: int = 3) -> str:
    """'8015 Customer not found x 1,234 (e.g. row 17); ...' for the one-line summary."""
    parts = []
    for g in groups[:limit]:
        label = " ".join(filter(None, (g["code"], g["message"]))) or g["stage"]
        parts.append(f"{label} x {g['count']:,} (e.g. row {g['example_row']})")
    more = len(groups) - limit
    if more > 0:  # summary.json's top_errors has them (up to TOP_GROUPS), errors.csv every row
        parts.append(f"and {more} more cause{'s' if more > 1 else ''} (summary.json top_errors, errors.csv)")
    return "; ".join(parts)


def describe_warnings(by_code: dict[str, int]) -> str:
    """'91015 x2, 91007 x1'."""
    return ", ".join(f"{code} x{count:,}" for code, count in sorted(by_code.items(), key=lambda kv: -kv[1]))
