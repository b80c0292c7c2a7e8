"""Several rows for one customer: which rows the `last` and `reject` policies hold back.

`[input] duplicates` decides (the pool never sends two requests for one customer at
once, whatever the policy):
- `sequential` (default): every row is sent, one customer's rows in file order.
- `last`: only the last valid row of each customer is sent; its earlier valid rows go
  to skipped.csv with a reason naming the row sent instead.
- `reject`: no row of a customer that has several rows is sent; each goes to errors.csv
  (stage validation) naming the customer's other rows. Invalid rows count here too, so
  the file's duplicates show up whole.

Both need the whole file seen before the first row is sent: a pre-pass (prepare.py)
feeds every row's customer key here. Keys are kept as 128-bit hashes in numpy arrays
(24 bytes a row, several times less than a dict of strings); a
false match between two customers would need a 128-bit collision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_HASH_KEYS = ("batch-updater-k1", "batch-updater-k2")  # pandas wants 16 characters
LISTED_ROWS = 10


@dataclass(frozen=True)
class Decision:
    row: int
    reject: bool               # True: an error (reject policy); False: skipped (last policy)
    group: tuple[int, ...]     # every row of the customer that takes part, in file order

    def message(self, customer: str) -> str:
        """`customer`: how the row names its customer, e.g. "mobile 919845012345"."""
        if not self.reject:
            return (f"duplicate: row {self.group[-1]} is a later row for the same customer"
                    f" ({customer}) and is sent instead ([input] duplicates = \"last\")")
        others = _listing([r for r in self.group if r != self.row])
        return (f"the same customer ({customer}) is also in {others}; [input] duplicates ="
                " \"reject\" sends none of them: keep one row per customer, or set duplicates"
                " to \"sequential\" or \"last\"")


class DuplicateScan:
    """Collects (row, customer key) pairs chunk by chunk, then decides per the policy."""

    def __init__(self, policy: str):
        if policy not in ("last", "reject"):
            raise ValueError(policy)
        self.policy = policy
        self._rows: list[np.ndarray] = []
        self._hashes: list[np.ndarray] = []
        self._valid: list[np.ndarray] = []

    def add(self, rows: Sequence[int], keys: Sequence[str],
            valid: Sequence[bool] | np.ndarray | None = None) -> None:
        """Rows that take part (`last`: valid rows; `reject`: rows with an identifier)."""
        if not len(rows):
            return
        self._valid.append(np.ones(len(rows), dtype=bool) if valid is None
                           else np.asarray(valid, dtype=bool))
        import pandas as pd

        values = np.asarray(keys, dtype=object)
        hashes = np.empty((len(values), 2), dtype=np.uint64)
        hashes[:, 0] = pd.util.hash_array(values, hash_key=_HASH_KEYS[0], categorize=False)
        hashes[:, 1] = pd.util.hash_array(values, hash_key=_HASH_KEYS[1], categorize=False)
        self._rows.append(np.asarray(rows, dtype=np.int64))
        self._hashes.append(hashes)

    def decide(self) -> Decisions:
        if not self._rows:
            return Decisions(self.policy, {})
        rows = np.concatenate(self._rows)
        hashes = np.concatenate(self._hashes)
        valid = np.concatenate(self._valid)
        self._rows, self._hashes, self._valid = [], [], []
        order = np.lexsort((rows, hashes[:, 1], hashes[:, 0]))
        rows, hashes, valid = rows[order], hashes[order], valid[order]
        starts = np.flatnonzero(np.r_[True, (hashes[1:] != hashes[:-1]).any(axis=1)])
        sizes = np.diff(np.r_[starts, len(rows)])
        held: dict[int, tuple[int, ...]] = {}  # row -> its customer's rows (one tuple per customer)
        rejected_valid = 0
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            group = tuple(rows[start:start + size].tolist())
            for row in (group[:-1] if self.policy == "last" else group):
                held[row] = group
            if self.policy == "reject":
                rejected_valid += int(valid[start:start + size].sum())
        return Decisions(self.policy, held, rejected_valid)


class Decisions:
    """The rows a policy holds back, looked up chunk by chunk."""

    def __init__(self, policy: str, held: dict[int, tuple[int, ...]], rejected_valid: int = 0):
        self.policy = policy
        self._held = held
        self.rejected_valid = rejected_valid  # rows held back by `reject` that were valid

    def __len__(self) -> int:
        return len(self._held)

    def within(self, rows: Sequence[int]) -> list[Decision]:
        if not self._held:
            return []
        reject = self.policy == "reject"
        return [Decision(row, reject, self._held[row]) for row in rows if row in self._held]


def _listing(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:LISTED_ROWS])
    more = f" and {len(rows) - LISTED_ROWS} more" if len(rows) > LISTED_ROWS else ""
    return ("row " if len(rows) == 1 else "rows ") + shown + more
