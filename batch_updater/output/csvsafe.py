"""CSV formula injection (OWASP): neutralise report cells a spreadsheet would execute.

A cell starting with = + - @ tab or CR gets a leading apostrophe, which spreadsheets
show as text. The reader strips exactly that apostrophe again (`restore`), so a report
fed back as input carries the original values: `'=1+2` → `=1+2`, `'+919845012345` →
`+919845012345`. A value that itself starts with apostrophes before such a character
gets one more (`'=x` → `''=x`), so the round trip is exact for every value.
"""

from __future__ import annotations

from operator import itemgetter
from typing import overload

import numpy as np

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
GUARD = "'"


@overload
def neutralise(cell: str) -> str: ...
@overload
def neutralise(cell: object) -> object: ...
def neutralise(cell: object) -> object:
    if isinstance(cell, str) and cell and cell.lstrip(GUARD).startswith(TRIGGERS):
        return GUARD + cell
    return cell


def restore(cell: str) -> str:
    """Undo `neutralise`: one leading apostrophe before [apostrophes and] = + - @ tab CR goes."""
    if cell.startswith(GUARD) and cell.lstrip(GUARD).startswith(TRIGGERS):
        return cell[1:]
    return cell


def restore_column(cells: list) -> list:
    """`restore` over a column of text cells, cheaply when (as usual) no cell needs it."""
    try:
        if GUARD not in "".join(cells):  # one C-speed pass; most columns hold no apostrophe
            return cells
    except TypeError:  # a cell that is not text (NaN): look at each
        pass
    return [restore(cell) if isinstance(cell, str) else cell for cell in cells]


_RISKY_FIRST = frozenset(TRIGGERS + (GUARD,))
_first_character = itemgetter(slice(0, 1))


def neutralise_rows(values):
    """`neutralise` over a 2-D object array of cells (one chunk), a column at a time;
    returns rows as lists."""
    columns = [neutralise_column(column) for column in values.T]
    if not columns:
        return [[] for _ in range(len(values))]
    return np.column_stack(columns).tolist()


def neutralise_column(column):
    """`neutralise` over a column (a sequence of cells), returned as it came when no cell
    starts with a trigger or an apostrophe, as usual: telling that costs a set of first
    characters (C speed), not a call per cell."""
    try:
        if _RISKY_FIRST.isdisjoint(map(_first_character, column)):
            return column
    except TypeError:  # a cell that is not text (NaN)
        pass
    return np.array([neutralise(cell) for cell in column], dtype=object)
