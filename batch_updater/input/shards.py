"""Sharding: split one file's customers over N workers (output.merge joins their reports).

A row belongs to shard K of N when its customer key hashes to K, so every row of one
customer lands in the same shard, in file order, and every row in exactly one shard.
The hash (CRC-32) is stable across processes and machines, as Airflow's mapped tasks need.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace

from ..config import Config
from ..errors import UsageError
from ..rows.payload import customer_key
from .columns import ColumnPlan
from .reader import Chunk
from .source import Source


@dataclass(frozen=True)
class Shard:
    index: int   # K, from 1
    count: int   # N

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard {text!r}: expected K/N, e.g. 2/8") from None
        if not 1 <= index <= count:
            raise UsageError(f"--shard {text!r}: K must be between 1 and N")
        return cls(index, count)

    def owns(self, customer_key: str) -> bool:
        return zlib.crc32(customer_key.encode("utf-8")) % self.count == self.index - 1

    def share(self, limit: int) -> int:
        """This shard's part of `limit`; the N parts add up to it (at least 1 each)."""
        return max(1, limit // self.count + (self.index <= limit % self.count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


UPDATE_LIMIT, ADD_LIMIT = "limits.rate_per_minute", "limits.create.rate_per_minute"


def shard_limits(config: Config, shard: Shard | None, given: Collection[str] = ()) -> Config:
    """The config shard K of N runs with: its share of each rate limit, which belongs to the
    API key that every shard uses. The shares add up to the key's limit exactly (R // N,
    one more for the first R % N shards), so N shards at their own limits keep the key's
    in every window. A limit in `given` (UPDATE_LIMIT, ADD_LIMIT) was set for the shard
    itself and is kept. The one rule of the CLI's --shard and the Airflow operator."""
    if shard is None or shard.count == 1:
        return config
    limits, adds = config.limits, config.create_limits
    if UPDATE_LIMIT not in given:
        limits = replace(limits, rate_per_minute=shard.share(limits.rate_per_minute))
    if ADD_LIMIT not in given:
        adds = replace(adds, rate_per_minute=shard.share(adds.rate_per_minute))
    return replace(config, limits=limits, create_limits=adds)


class ShardedInput:
    """An input file seen through one shard: chunks keep only the shard's rows, with
    their own row numbers, so validation, sending and reports all see the same rows."""

    def __init__(self, source: Source, plan: ColumnPlan, config: Config, shard: Shard):
        self._source = source
        self.shard = shard
        self.path, self.headers = source.path, source.headers
        # the shard's share of the file's rows: an estimate, for the ETA
        self.row_count = source.row_count // shard.count if source.row_count is not None else None
        self._name_at = plan.position("identifierName")
        self._value_at = plan.position("identifierValue")
        self._default_name = config.api.identifier_name

    def chunks(self) -> Iterator[Chunk]:
        for chunk in self._source.chunks():
            keep = self._owned(chunk.frame)
            rows = [row for row, kept in zip(chunk.rows, keep) if kept]
            yield Chunk(chunk.first_row, chunk.frame[keep], row_numbers=rows)

    def _owned(self, frame) -> list[bool]:
        values = frame.iloc[:, self._value_at].fillna("").astype(str)
        if self._name_at is None:
            names = [self._default_name] * len(frame)
        else:
            names = [name.strip() or self._default_name
                     for name in frame.iloc[:, self._name_at].fillna("").astype(str)]
        return [self.shard.owns(customer_key(name, value)) for name, value in zip(names, values)]
