"""Group commits: the journal's and the state store's, in a writer thread, every few tenths
of a second. SQLite runs there without the GIL while the event loop goes on sending, and
the loop never waits for a commit."""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..errors import RunAborted
from ..output.logs import log


async def flush_every(flush: Callable[[], None], seconds: float, writer: ThreadPoolExecutor,
                      on_lost: Callable[[str], None]) -> None:
    """Group commits (of the journal; of the state store), off the event loop's thread:
    SQLite runs there without the GIL while the loop goes on sending, and the loop never
    waits for a commit. Each store's commits run one after another, in order; the two
    stores' side by side, so a long state store write never holds the journal's back.

    A store that is gone (RunAborted: PostgreSQL's connection lost; it does not reconnect)
    calls `on_lost` with why: sending on while nothing is committed would only grow what a
    resume elsewhere must send again."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        try:
            await loop.run_in_executor(writer, _flush_and_trim, flush)
        except RunAborted as exc:
            on_lost(str(exc))
            return
        except Exception as exc:  # e.g. a disk full for a moment: the rows wait for the next commit
            log.warning("a group commit failed (%s); trying again", exc)


def _flush_and_trim(flush: Callable[[], None]) -> None:
    """Each writer thread allocates from a glibc arena of its own, where a commit's large
    buffers (JSON texts of thousands of keys, SQLite's sorter) stay resident once freed;
    malloc_trim hands them back, cheaply when there is nothing to hand back (its effect on
    a full run's peak memory is in bench/RESULTS.md)."""
    flush()
    _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], object]:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc (Linux); elsewhere there is nothing to do
    except (OSError, AttributeError):
        return lambda pad: 0


_malloc_trim = _find_malloc_trim()
