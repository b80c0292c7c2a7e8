"""What the rest of the product needs of an input: a CSV file, a workbook's sheet, or one
shard of either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from .reader import Chunk


class Source(Protocol):
    @property
    def path(self) -> Path: ...

    @property
    def headers(self) -> list[str]: ...

    @property
    def row_count(self) -> int | None:
        """Data rows, when known without reading the file (else estimated for the ETA)."""

    def chunks(self) -> Iterator[Chunk]:
        """The rows as chunks of text cells, in file order, each with its row numbers."""
