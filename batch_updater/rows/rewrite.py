"""Cells rewritten before validation: value maps, mobile numbers, day- or month-first dates.

The settings: `[values."<column>"]` maps (rewrite the listed values, and with `strict`, refuse
the others), `[input] default_country` (mobile numbers in any format to country code +
number: rows/phones.py) and `[input] date_order` (17/05/1990 to 1990-05-17: cells.DateOrder).
A column's value map comes first, so a map may produce a phone number or a date.

The rewriting runs on a chunk's trimmed cells before anything else looks at them (prepare.py),
so validation, the --only-changed fingerprints, the duplicate policies, the payloads and
preview.jsonl all see the values as they are sent. The reports read the file again, so
they keep its values, and errors.csv can be fed back as it is.

A cell the rewriting refuses (a number no country has, 31/02/1990 under DMY, a value a strict
map does not list) keeps its text and gets its message here. Validation then leaves that cell
alone (`judged`), so a cell has one message. `counts` says, per column, how many cells changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..config import InputSettings, ValueMap
from .cells import DateOrder, is_date_or_date_time, parse_date
from .phones import MobileNumbers
from .registry import ColumnRules

Step = Callable[[str], str]  # a cell's new text; ValueError(why) when the cell is refused


@dataclass
class Rewritten:
    columns: list[list[str]]                     # the chunk's cells, rewritten
    counts: dict[str, int] = field(default_factory=dict)  # column -> cells whose value changed
    refused: dict[int, dict[str, str]] = field(default_factory=dict)  # position -> column -> message


@dataclass(frozen=True)
class _ColumnSteps:
    at: int                                  # the column's position among the chunk's columns
    steps: tuple[Step, ...]
    keep: Callable[[str], object] | None     # a fast test: a value it accepts needs no step (clean mobiles)
    all_kept: Callable[[str], object] | None = None  # keep, or an empty cell
    per_row: bool = False                    # identifierValue: only the rows whose identifier is a mobile


class Rewriter:
    """Compiled once per file header (`names`: the canonical columns, in file order)."""

    def __init__(self, names: Sequence[str], settings: InputSettings, identifier_name: str):
        self.names = list(names)
        self._default_kind = identifier_name.lower()
        self._kind_at = self.names.index("identifierName") if "identifierName" in self.names else None
        rules = ColumnRules(settings.types, settings.timezone, settings.date_order)
        mobiles = MobileNumbers(settings.default_country) if settings.default_country else None
        dates = DateOrder(settings.date_order) if settings.date_order != "YMD" else None
        self._columns = [plan for at, name in enumerate(self.names)
                         if (plan := self._plan(at, name, rules, settings.values, mobiles, dates)) is not None]
        # identifierName first: a value map there decides which identifierValues are mobiles
        self._columns.sort(key=lambda plan: plan.at != self._kind_at)
        self.reads_dates = any(rules.column(name).holds in ("date", "datetime") for name in self.names)

    def _plan(self, at: int, name: str, rules: ColumnRules, maps: Mapping[str, ValueMap],
              mobiles: MobileNumbers | None, dates: DateOrder | None) -> _ColumnSteps | None:
        steps: list[Step] = [mapped(name, maps[name])] if name in maps else []
        holds = rules.column(name).holds
        per_row = name == "identifierValue" and (self._kind_at is not None or self._default_kind == "mobile")
        keep = all_kept = None
        if mobiles is not None and (holds == "mobile" or per_row):
            if not steps:  # after a value map, every cell takes the steps
                keep, all_kept = mobiles.clean, mobiles.clean_or_empty
            steps.append(mobiles.normalise)
        elif dates is not None and holds in ("date", "datetime"):
            steps.append(dated(dates, parse_date if holds == "date" else is_date_or_date_time))
        if not steps:
            return None
        return _ColumnSteps(at, tuple(steps), keep, all_kept, per_row and mobiles is not None)

    def apply(self, columns: list[list[str]]) -> Rewritten:
        """`columns`: the chunk's trimmed cells in `names` order (left as they are)."""
        result = Rewritten(columns)
        if not self._columns:
            return result
        result.columns = list(columns)
        for plan in self._columns:
            cells = columns[plan.at]
            if plan.all_kept is not None and all(map(plan.all_kept, cells)):
                continue  # a clean column (the usual case): one pass at C speed, no Python per cell
            rows = self._mobile_rows(result.columns) if plan.per_row else range(len(cells))
            new, changed, refused = _rewritten(cells, rows, plan)
            result.columns[plan.at] = new
            name = self.names[plan.at]
            if changed:
                result.counts[name] = changed
            if refused:
                from .schema import describe  # pandera's module: imported by validation anyway

                for i, why in refused.items():
                    result.refused.setdefault(i, {})[name] = describe(name, cells[i], why)
        return result

    def _mobile_rows(self, columns: list[list[str]]) -> Sequence[int]:
        """The rows whose identifierValue is a mobile number (identifierName, or the config's default)."""
        if self._kind_at is None:
            return range(len(columns[0])) if self._default_kind == "mobile" else ()
        default = self._default_kind
        return [i for i, kind in enumerate(columns[self._kind_at]) if (kind.lower() if kind else default) == "mobile"]


def _rewritten(cells: list[str], rows: Sequence[int],
               plan: _ColumnSteps) -> tuple[list[str], int, dict[int, str]]:
    """The column with its steps applied to `rows` (each distinct value once), how many
    cells changed, and the refusals."""
    keep = plan.keep
    todo = [i for i in rows if cells[i] and (keep is None or not keep(cells[i]))]
    if not todo:
        return cells, 0, {}
    new, changed, refused = list(cells), 0, {}
    done: dict[str, str | ValueError] = {}
    for i in todo:
        value = cells[i]
        if value not in done:
            done[value] = _through(value, plan.steps)
        outcome = done[value]
        if isinstance(outcome, ValueError):
            refused[i] = str(outcome)
        elif outcome != value:
            new[i] = outcome
            changed += 1
    return new, changed, refused


def _through(value: str, steps: tuple[Step, ...]) -> str | ValueError:
    try:
        for step in steps:
            value = step(value) if value else value  # a map may empty a cell: leave it alone then
    except ValueError as why:
        return why
    return value


def mapped(name: str, value_map: ValueMap) -> Step:
    """A [values] map as a step: keys and targets match in any case (a target is respelled)."""
    table = {target.lower(): target for _, target in value_map.pairs if target}
    table |= {key.lower(): target for key, target in value_map.pairs}
    allowed = ", ".join(dict.fromkeys([key for key, _ in value_map.pairs]
                                      + [target for _, target in value_map.pairs if target]))
    refusal = f'is not one of the values [values."{name}"] allows: {allowed}'

    def step(value: str) -> str:
        found = table.get(value.lower())
        if found is not None:
            return found
        if value_map.strict:
            raise ValueError(refusal)
        return value
    return step


def dated(order: DateOrder, accepts: Callable[[str], object]) -> Step:
    """A date written in `order` to ISO, when the column's own parser accepts the result; a
    value not of that shape is left for validation (whose message names the order)."""
    def step(value: str) -> str:
        iso = order.iso(value)
        return iso if iso != value and accepts(iso) else value
    return step


def counts_line(counts: Mapping[str, int]) -> str:
    """`normalised: identifierValue 3,912, extendedFields.dob 1,204` (empty when nothing changed)."""
    if not counts:
        return ""
    return "normalised: " + ", ".join(f"{name} {count:,}" for name, count in counts.items())
