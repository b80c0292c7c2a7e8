"""Validation and mapping of each chunk: rows become payloads or settled outcomes.

One path serves a real run, `run --dry-run` and `validate`: cells are trimmed, blank
rows are skipped, the pandera schema judges every row (schema.py), a value in a column
without a header makes its row invalid, the duplicates policy holds rows back
(duplicates.py), and every other row becomes a Payload (mapping.py).

Some settings need the whole file seen before the first row is sent: `max_invalid`
(stop before sending when the file is worse than that) and the `last` and `reject`
duplicate policies. For them `screen_input` makes a pre-pass: it reads and validates
the file once more, without mapping (about half the time of validation and mapping; with
a duplicates policy, which also computes every row's customer key, three quarters), and
keeps 24 bytes per row for duplicates.

Runs in a worker thread (see runner), so it must not touch the event loop.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import compress
from typing import TypedDict

import numpy as np

from ..config import Config
from ..errors import InputError
from ..input.columns import ColumnPlan
from ..input.reader import Chunk
from ..input.source import Source
from ..outcomes import RowOutcome, Stage, Status
from ..state.sync_state import ChangeFilter, Fingerprints
from .duplicates import Decisions, DuplicateScan
from .mapping import Mapper
from .payload import Payload, customer_key
from .rewrite import Rewriter

SHOWN_PROBLEMS = 3  # row messages quoted when max_invalid stops a run


@dataclass
class PreparedChunk:
    """One chunk after validation and mapping."""
    payloads: list[Payload]
    outcomes: list[RowOutcome]  # rows settled without a request (invalid, blank, held back)
    rows: Sequence[int] = ()    # the chunk's rows, in file order
    unchanged: np.ndarray | None = None  # per row: acknowledged before as it is (settled in bulk)
    rewritten: dict[str, int] = field(default_factory=dict)  # column -> cells rewritten (rows/rewrite.py)


@dataclass
class ValidatedChunk:
    """One chunk after validation, before mapping."""
    rows: Sequence[int]         # the chunk's rows (a range unless a shard left some out)
    columns: list[list[str]]    # the canonical columns' trimmed cells, rewritten, in plan order
    blank: np.ndarray           # per row: every cell empty
    problems: dict[int, str]    # row -> message, for invalid non-blank rows
    unchanged: np.ndarray | None = None  # per row: acknowledged before as it is (not validated again)
    keys: np.ndarray | None = None       # per row: the customer's state key (changes.py)
    digests: np.ndarray | None = None    # per row: the digest of its cells
    rewritten: dict[str, int] = field(default_factory=dict)  # column -> cells rewritten


@dataclass
class PrePassFindings:
    """What a pre-pass over the whole file found."""
    rows: int = 0                      # non-blank rows
    invalid: int = 0                   # rows with a validation problem or rejected as duplicates
    first_problems: list[tuple[int, str]] = field(default_factory=list)
    duplicates: Decisions | None = None


class _Defaults(TypedDict):
    """The settings RowValidator and Mapper both take."""
    source: str
    identifier_name: str
    account_id: str | None
    types: Mapping[str, str | tuple[str, ...]]
    timezone: str
    date_order: str


class ChunkPreparer:
    """Compiled once per file header: validates and maps chunks."""

    def __init__(self, plan: ColumnPlan, config: Config):
        from .schema import RowValidator  # pandera is imported only where it is needed

        api, settings = config.api, config.input
        defaults = _Defaults(source=api.source, identifier_name=api.identifier_name,
                             account_id=api.account_id, types=settings.types,
                             timezone=settings.timezone or "UTC", date_order=settings.date_order)
        used = plan.used
        self.positions = [i for i, _ in used]
        self.names = [name for _, name in used]
        self.unnamed = list(plan.unnamed)
        self.validator = RowValidator(self.names, **defaults,
                                      required=(api.add_requires or ()) if api.mode == "upsert" else (),
                                      mobiles_rewritten=settings.default_country is not None)
        self.mapper = Mapper(self.names, **defaults)
        self.rewriter = Rewriter(self.names, settings, api.identifier_name)
        self.identifier = self.names.index("identifierValue")
        self.fingerprints = Fingerprints(self.names, config)

    def check(self, chunk: Chunk, changes: ChangeFilter | None = None) -> ValidatedChunk:
        import pandas as pd

        frame = chunk.frame
        rewritten = self.rewriter.apply([_trimmed(frame[i].to_numpy()) for i in self.positions])
        columns = rewritten.columns  # from here on, every step sees the values as they are sent
        unnamed = [_trimmed(frame[i].to_numpy()) for i in self.unnamed]
        cells = np.array(columns + unnamed, dtype=object)  # one block: half the cost of 14 columns
        filled = (cells != "").any(axis=0)
        # pandas-stubs' SequenceNotStr rejects Sequence[int]; a range or list of ints is a valid index
        canonical = pd.DataFrame(cells[:len(columns)].T, index=chunk.rows,  # type: ignore[call-overload]
                                 columns=self.names, dtype=object, copy=False)
        keys = digests = unchanged = None
        if changes is not None:
            keys, digests = self.fingerprints.of(columns)
            unchanged = changes.unchanged(keys, digests) & filled
            # A row the API acknowledged exactly as it is passed validation then: skip it now.
            canonical = canonical[~unchanged] if unchanged.any() else canonical
        refused = {chunk.rows[i]: why for i, why in rewritten.refused.items()}
        problems = self.validator.problems(canonical, refused) if len(canonical) else {}
        _hostile_cells(problems, chunk.rows, self.names, columns)
        last_named = max(self.positions)
        for position, column in zip(self.unnamed, unnamed):
            _unnamed_problems(problems, chunk.rows, position, column, beyond=position > last_named)
        blank = ~filled
        if problems and blank.any():
            for row in np.asarray(chunk.rows)[blank].tolist():
                problems.pop(row, None)
        if problems and unchanged is not None and unchanged.any():
            for row in np.asarray(chunk.rows)[unchanged].tolist():
                problems.pop(row, None)
        return ValidatedChunk(chunk.rows, columns, blank, problems, unchanged, keys, digests, rewritten.counts)

    def prepare(self, chunk: Chunk, duplicates: Decisions | None = None,
                changes: ChangeFilter | None = None) -> PreparedChunk:
        checked = self.check(chunk, changes)
        rows, columns = checked.rows, checked.columns
        numbers = np.asarray(rows)
        unchanged = checked.unchanged if checked.unchanged is not None else np.zeros(len(rows), dtype=bool)
        outcomes = [RowOutcome(row, Status.SKIPPED, message="blank row")
                    for row in numbers[checked.blank].tolist()]
        outcomes += self._held_back(checked, duplicates, unchanged)
        prepared = PreparedChunk([], outcomes, rows, checked.unchanged, checked.rewritten)
        send = ~unchanged  # every row is sent, settled by an outcome, or unchanged
        if outcomes:
            send &= ~np.isin(numbers, [outcome.row for outcome in outcomes])
        if not send.any():
            return prepared
        valid_rows = numbers[send].tolist()
        if not send.all():
            keep = send.tolist()
            columns = [list(compress(column, keep)) for column in columns]
        if changes is not None:
            # check() computed both because changes was given
            assert checked.keys is not None and checked.digests is not None
            changes.sending(valid_rows, checked.keys[send], checked.digests[send])
        prepared.payloads = self.mapper.payloads(valid_rows, columns)
        return prepared

    def _held_back(self, checked: ValidatedChunk, duplicates: Decisions | None,
                   unchanged: np.ndarray) -> list[RowOutcome]:
        """Outcomes of the rows the duplicates policy holds back and of invalid rows (a
        row `reject` holds back joins `problems`)."""
        rows, columns, problems = checked.rows, checked.columns, checked.problems
        identifiers = columns[self.identifier]
        index_of = _indexer(rows)
        outcomes = []
        if duplicates:
            skip = set(np.asarray(rows)[unchanged].tolist())
            held = set(problems)
            for decision in duplicates.within(rows):
                if decision.row in skip:
                    continue
                if decision.row in held and not decision.reject:
                    continue  # invalid rows never take part in `last`
                lookup = self.mapper.lookups([[c[index_of(decision.row)]] for c in columns])[0]
                message = decision.message(f"{lookup.identifier_name} {lookup.identifier_value}")
                if decision.reject:
                    problems[decision.row] = "; ".join(filter(None, (problems.get(decision.row), message)))
                else:
                    outcomes.append(RowOutcome(decision.row, Status.SKIPPED, message=message,
                                               identifier=lookup.identifier_value))
                held.add(decision.row)
        outcomes += [RowOutcome(row, Status.ERROR, Stage.VALIDATION, "", message,
                                identifier=identifiers[index_of(row)])
                     for row, message in problems.items()]
        return outcomes

    def keys(self, checked: ValidatedChunk, wanted: np.ndarray) -> tuple[list[int], list[str]]:
        """The customer keys of the rows where `wanted` holds (for the duplicates pre-pass)."""
        index = np.flatnonzero(wanted).tolist()
        columns = [[column[i] for i in index] for column in checked.columns]
        lookups = self.mapper.lookups(columns) if index else []
        return ([checked.rows[i] for i in index],
                [customer_key(lookup.identifier_name, lookup.identifier_value) for lookup in lookups])


def _indexer(rows: Sequence[int]) -> Callable[[int], int]:
    """Row number -> position in the chunk (rows are consecutive unless a shard left some out)."""
    if isinstance(rows, range):
        first = rows.start
        return lambda row: row - first
    return {row: i for i, row in enumerate(rows)}.__getitem__


def prepare_chunks(source: Source, plan: ColumnPlan, config: Config, screen: PrePassFindings | None = None,
                   changes: ChangeFilter | None = None) -> Iterator[PreparedChunk]:
    """Validate and map each chunk. Pass the PrePassFindings of screen_input when there was one;
    without it, a duplicates policy other than sequential makes its own pre-pass."""
    preparer = ChunkPreparer(plan, config)
    if config.input.date_order != "YMD" and not preparer.rewriter.reads_dates:
        _warn_date_order_unused(config.input.date_order)
    if screen is None and _policy(config) != "sequential":
        screen = _scan(source, preparer, _policy(config))
    duplicates = screen.duplicates if screen else None
    for number, chunk in enumerate(source.chunks()):
        for piece in _first_rows_apart(chunk) if number == 0 else (chunk,):
            with gc_paused():
                prepared = preparer.prepare(piece, duplicates, changes)
            yield prepared


def _warn_date_order_unused(order: str) -> None:
    """A column of the org's own is a date only when [types] says so: without that, a file's
    17/05/1990 would go out as written, and nobody would know why date_order did nothing."""
    from ..output.logs import log

    log.warning('[input] date_order = "%s" reads date columns, and this file has none: declare yours'
                ' in [types] (e.g. "extendedFields.dateOfBirth" = "date"), or their values are sent as written',
                order)


FIRST_PIECE_ROWS = 1_000


def _first_rows_apart(chunk: Chunk) -> tuple[Chunk, ...]:
    """The file's first chunk as its first FIRST_PIECE_ROWS rows and the rest: the first
    requests go out while the rest of the chunk is validated (a chunk of 10,000 rows takes
    tens of milliseconds). Which rows share a chunk changes no outcome."""
    n = FIRST_PIECE_ROWS
    if len(chunk.frame) <= 2 * n:
        return (chunk,)
    numbers = chunk.row_numbers
    rows = chunk.rows
    return (Chunk(chunk.first_row, chunk.frame.iloc[:n], None if numbers is None else list(numbers[:n])),
            Chunk(rows[n], chunk.frame.iloc[n:], None if numbers is None else list(numbers[n:])))


def screen_input(source: Source, plan: ColumnPlan, config: Config, *,
                 dry_run: bool = False) -> PrePassFindings | None:
    """The pre-pass, when a setting needs one; raise InputError when `max_invalid` is exceeded.

    `validate` and `run --dry-run` always write the full errors.csv, so they do not stop
    at max_invalid: only a run that would send checks it.
    """
    limit = None if dry_run else config.input.max_invalid
    policy = _policy(config)
    if limit is None and policy == "sequential":
        return None
    screen = _scan(source, ChunkPreparer(plan, config), policy)
    if limit is not None and _too_many(screen, limit):
        raise InputError(_too_many_message(source, screen, limit, config))
    return screen


def _policy(config: Config) -> str:
    return config.input.duplicates or "sequential"


def _scan(source: Source, preparer: ChunkPreparer, policy: str) -> PrePassFindings:
    screen = PrePassFindings()
    scan = DuplicateScan(policy) if policy != "sequential" else None
    for chunk in source.chunks():
        with gc_paused():
            checked = preparer.check(chunk)
        screen.rows += int((~checked.blank).sum())
        screen.invalid += len(checked.problems)
        for row, message in list(checked.problems.items())[:SHOWN_PROBLEMS - len(screen.first_problems)]:
            screen.first_problems.append((row, message))
        if scan is not None:
            valid = ~checked.blank & ~np.isin(np.asarray(checked.rows), list(checked.problems))
            if policy == "last":
                wanted = valid
            else:
                wanted = ~checked.blank & (np.asarray(checked.columns[preparer.identifier],
                                                      dtype=object) != "")
            rows, keys = preparer.keys(checked, wanted)
            scan.add(rows, keys, valid[wanted])
    if scan is not None:
        screen.duplicates = scan.decide()
        # valid rows that `reject` holds back are invalid too (invalid ones are counted already)
        screen.invalid += screen.duplicates.rejected_valid
    return screen


def _too_many(screen: PrePassFindings, limit: str) -> bool:
    if limit.endswith("%"):
        return screen.rows > 0 and screen.invalid * 100 > float(limit[:-1]) * screen.rows
    return screen.invalid > int(limit)


def _too_many_message(source: Source, screen: PrePassFindings, limit: str, config: Config) -> str:
    shown = "; ".join(f"row {row}: {message}" for row, message in screen.first_problems)
    return (f"{source.path}: {screen.invalid} of {screen.rows} rows are invalid, more than"
            f" max_invalid = {limit}, so nothing was sent. First problems: {shown}. Run"
            f" `{config.command('validate', source.path)}` for every problem in errors.csv, fix the"
            " file and run again")


def _unnamed_problems(problems: dict[int, str], rows: Sequence[int], position: int, column: list[str],
                      beyond: bool = False) -> None:
    from .schema import describe

    # Past the last header, a value usually means a row with more cells than the header
    # (a stray delimiter or quote): the reader keeps such cells in unnamed columns.
    error = ("holds a value: the row has more cells than the header row; check its delimiters"
             " and quoting, or give the column a header" if beyond else
             "holds a value: give the column a header, or clear it")
    for i, value in enumerate(column):
        if value:
            row = rows[i]
            text = describe(f"column {position + 1} (no header)", value, error)
            problems[row] = "; ".join(filter(None, (problems.get(row), text)))


CELL_LIMIT = 32_767  # characters in a spreadsheet cell; a longer CSV cell is a quoting mistake


def _hostile_cells(problems: dict[int, str], rows: Sequence[int], names: list[str],
                   columns: list[list[str]]) -> None:
    """A NUL byte, or more characters than a spreadsheet cell holds, makes a row invalid
    (one join and one max per column: next to nothing when, as usual, there are none)."""
    from .schema import describe

    for name, column in zip(names, columns):
        if "\x00" not in "".join(column) and max(map(len, column), default=0) <= CELL_LIMIT:
            continue
        for i, value in enumerate(column):
            if "\x00" in value:
                text = describe(name, value.replace("\x00", "\\0"), "holds a NUL byte (\\0): remove it")
            elif len(value) > CELL_LIMIT:
                text = (f"{name} holds {len(value):,} characters, more than a spreadsheet cell"
                        f" ({CELL_LIMIT:,}): check the quoting of this row")
            else:
                continue
            row = rows[i]
            problems[row] = "; ".join(filter(None, (problems.get(row), text)))


def _trimmed(cells: np.ndarray) -> list[str]:
    values = cells.tolist()
    try:
        return list(map(str.strip, values))
    except TypeError:  # a short CSV line leaves NaN in its missing cells
        return [cell.strip() if isinstance(cell, str) else "" for cell in values]


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector away from the objects a chunk creates.

    A chunk builds tens of thousands of containers (payloads: dicts, lists, tuples), all
    alive until they are sent. Left alone, the collector triggers every 700 of them and
    walks the survivors again and again; after it, it would still walk each of them once
    or twice in young collections. Measured here: 40-45% of validation and mapping time.
    So the collector is paused while a chunk is built, and at the end everything tracked
    is moved to the oldest generation in one step (gc.freeze() then gc.unfreeze()), which
    full collections still visit: payloads hold no reference cycles and are freed by
    reference counting as they are sent; a young cycle elsewhere is collected by the next
    full collection instead of a young one. A process that froze objects itself (a
    pre-fork server) keeps its frozen set: the move is skipped. Nesting and threads are
    counted; a collector that was off stays off.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                if gc.get_freeze_count() == 0:
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()
