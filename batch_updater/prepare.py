"""Validation and mapping of each chunk: rows become payloads or settled outcomes.

Runs in a worker thread (see runner), so it must not touch the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from .columns import ColumnPlan
from .config import Config
from .mapping import Mapper, Payload
from .outcomes import RowOutcome, Stage, Status
from .reader import Chunk, CsvInput


@dataclass
class Prepared:
    """One chunk after validation and mapping."""
    payloads: list[Payload]
    outcomes: list[RowOutcome]  # rows settled without a request (invalid, blank)


def prepare_chunks(source: CsvInput, plan: ColumnPlan, config: Config) -> Iterator[Prepared]:
    """Validate and map each chunk; pandera is imported only here, where it is needed."""
    from .schema import RowValidator

    api = config.api
    defaults = dict(source=api.source, identifier_name=api.identifier_name, account_id=api.account_id)
    used = plan.used
    positions = [i for i, _ in used]
    names = [name for _, name in used]
    validator = RowValidator(names, **defaults)
    mapper = Mapper(plan, **defaults)
    for chunk in source.chunks():
        yield _prepare(chunk, positions, names, validator, mapper)


def _prepare(chunk: Chunk, positions: list[int], names: list[str], validator, mapper: Mapper) -> Prepared:
    frame = chunk.frame.fillna("")
    canonical = frame.iloc[:, positions].set_axis(names, axis=1)
    canonical.index = chunk.rows
    blank = (frame.apply(lambda s: s.str.strip()) == "").all(axis=1).to_numpy()
    problems = validator.problems(canonical[~blank])
    outcomes: list[RowOutcome] = []
    payloads: list[Payload] = []
    for row, is_blank, cells in zip(chunk.rows, blank, frame.itertuples(index=False, name=None)):
        if is_blank:
            outcomes.append(RowOutcome(row, Status.SKIPPED, message="blank row"))
        elif row in problems:
            outcomes.append(RowOutcome(row, Status.ERROR, Stage.VALIDATION, "", problems[row],
                                       identifier=mapper.lookup(cells).identifier_value))
        else:
            payloads.append(mapper.payload(row, cells))
    return Prepared(payloads, outcomes)
