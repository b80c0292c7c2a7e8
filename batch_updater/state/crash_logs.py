"""The journal's two crash-durable logs, written between SQLite's group commits.

Both append through a shared memory map of their file: a store into a MAP_SHARED mapping
is in the kernel's page cache the moment it is made, so it survives a crash of the
process as a returned write() does (neither survives a crash of the machine: that would
need an fsync per row), without a system call per row, which would hand the GIL over to
the other threads each time. Only the segment being written is mapped (SEGMENT bytes),
so a log costs no memory as it grows; the file grows a segment at a time, and unused
bytes are zero.

- InFlightLog: row numbers (8-byte little-endian), each noted right before a request.
- AckLog: outcomes, each the moment its answer is known: a record is its length (4 bytes)
  and its JSON text. The text is stored first and the length last, so a record whose
  length is there is whole; a zero length ends a segment (its unused tail, or a record
  torn by a crash). A record that does not fit in the rest of a segment starts the next.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import orjson

SEGMENT = 1 << 19  # 512 KiB; a multiple of mmap.ALLOCATIONGRANULARITY
TEXT_LIMIT = 4096  # characters of each text of an outcome too large for a segment (SQLite keeps it whole)


class _MappedFile:
    """Appends at `used` through a map of the segment that holds it."""

    def __init__(self, path: Path, used: int):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._used = used
        self._map: mmap.mmap | None = None
        self._base = self._end = 0  # the mapped segment: file offsets [base, end)
        self._map_segment()

    def _map_segment(self) -> None:
        if self._map is not None:
            self._map.close()
        self._base = self._used // SEGMENT * SEGMENT
        self._end = self._base + SEGMENT
        if os.fstat(self._fd).st_size < self._end:
            os.ftruncate(self._fd, self._end)
        self._map = mmap.mmap(self._fd, SEGMENT, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                              offset=self._base)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
            os.ftruncate(self._fd, self._used)  # a clean close trims the unused bytes
        os.close(self._fd)


class InFlightLog(_MappedFile):
    """Row numbers as 8-byte little-endian integers; zero (no row number) is unused."""

    _pack = struct.Struct("<Q").pack_into

    def __init__(self, path: Path):
        used = path.stat().st_size // 8 * 8 if path.exists() else 0
        super().__init__(path, used)  # appends after what is there

    def append(self, row: int) -> None:
        if self._used == self._end:
            self._map_segment()
        assert self._map is not None  # mapped in __init__, remapped above
        self._pack(self._map, self._used - self._base, row)
        self._used += 8


class AckLog(_MappedFile):
    """Outcomes as records: a length, then JSON text. Opened on an empty log."""

    _length = struct.Struct("<I")

    def __init__(self, path: Path):
        super().__init__(path, 0)

    def append(self, values: tuple) -> None:
        text = orjson.dumps(values)
        if len(text) + 4 > SEGMENT:  # an answer of half a megabyte: keep the row's facts, not all its text
            text = orjson.dumps(tuple(v[:TEXT_LIMIT] if isinstance(v, str) else v for v in values))
        if self._used + 4 + len(text) > self._end:
            self._used = self._end  # the rest of this segment stays zero: readers skip it
            self._map_segment()
        assert self._map is not None
        at = self._used - self._base
        self._map[at + 4:at + 4 + len(text)] = text
        self._length.pack_into(self._map, at, len(text))  # last: now the record is whole
        self._used += 4 + len(text)


def read_in_flight_log(path: Path) -> set[int]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    usable = len(data) - len(data) % 8  # a torn last write is ignored
    rows = {int.from_bytes(data[i:i + 8], "little") for i in range(0, usable, 8)}
    rows.discard(0)  # slots the log had room for but never used (row numbers start at 2)
    return rows


def read_ack_log(path: Path, columns: int, batch_rows: int = 10_000) -> Iterator[list[tuple]]:
    """The outcomes of an ack log, in order, a batch at a time (the log of a long run that
    crashed holds a record per row answered)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the `with` below
    except FileNotFoundError:
        return
    with handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:  # not all in memory at once
            yield from _batches(_records(data), columns, batch_rows)


def _batches(records: Iterator[bytes], columns: int, batch_rows: int) -> Iterator[list[tuple]]:
    batch: list[tuple] = []
    for text in records:
        try:
            values = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if isinstance(values, list) and 0 < len(values) <= columns:  # shorter: an earlier version's
            batch.append(tuple(values) + (None,) * (columns - len(values)))
        if len(batch) >= batch_rows:
            yield batch
            batch = []
    if batch:
        yield batch


def _records(data: mmap.mmap) -> Iterator[bytes]:
    """Each whole record's text, in order."""
    for base in range(0, len(data), SEGMENT):
        at, end = base, min(base + SEGMENT, len(data))
        while at + 4 <= end:
            length = int.from_bytes(data[at:at + 4], "little")
            if length == 0 or at + 4 + length > end:
                break  # the segment's unused tail, or a record torn by a crash
            yield data[at + 4:at + 4 + length]
            at += 4 + length
