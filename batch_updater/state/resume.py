"""Resume bookkeeping: which rows of a chunk earlier runs of the job settled, which they
left for this run (and whether in doubt), and the chunk's unchanged rows as runs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..output.progress import Progress
from ..rows.payload import Payload
from ..rows.prepare import PreparedChunk
from .journal import FINAL, IN_FLIGHT, Journal
from .sync_state import UNCHANGED


def settled_before(rows: Sequence[int], states: dict[int, str], progress: Progress) -> set[int]:
    """The chunk's rows an earlier run of the job settled (they keep that outcome: none is
    sent, recorded or skipped again), counted as done by earlier runs."""
    settled = {row for row, state in states.items() if state in FINAL}
    if settled:  # a resumed run; `states` may name rows of other shards, so count the chunk's own
        progress.count_earlier(sum(1 for row in rows if row in settled))
    return settled


@dataclass
class EarlierRuns:
    """What the send loop learns of the job's earlier runs, row by row."""

    in_doubt: set[int] = field(default_factory=set)  # sent by one of them, never answered
    unsettled: set[int] = field(default_factory=set)  # left for this run to send, not sent yet
    sent_again: int = 0  # of those, the rows this run sent


def unfinished(payloads: list[Payload], states: dict[int, str], settled: set[int],
                earlier: EarlierRuns) -> Iterator[Payload]:
    """The payloads to send; notes those an earlier run sent without getting an answer."""
    for payload in payloads:
        if payload.row in settled:
            continue
        state = states.get(payload.row)
        if state is not None:
            earlier.unsettled.add(payload.row)
            if state == IN_FLIGHT:
                earlier.in_doubt.add(payload.row)
        yield payload


def skip_unchanged(prepared: PreparedChunk, settled: set[int], journal: Journal,
                    progress: Progress) -> None:
    """Journal the chunk's unchanged rows as runs of consecutive rows (most rows of a
    nightly export: a record per row would cost more than everything else they need)."""
    unchanged = prepared.unchanged
    if unchanged is None or not unchanged.any():
        return
    if settled:
        unchanged = unchanged & np.fromiter((row not in settled for row in prepared.rows),
                                            dtype=bool, count=len(unchanged))
    numbers = np.asarray(prepared.rows)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], unchanged.view(np.int8), [0]))))
    starts, ends = edges[::2], edges[1::2] - 1  # positions of each run's first and last row
    journal.record_skipped(zip(numbers[starts].tolist(), numbers[ends].tolist()), UNCHANGED)
    skipped = int(unchanged.sum())
    progress.done += skipped
    progress.skipped += skipped
