"""CSV formula injection (OWASP): neutralise report cells a spreadsheet would execute.

A cell starting with = + - @ tab or CR gets a leading apostrophe, which spreadsheets
show as text. The reader strips exactly that apostrophe again, so a report fed back
as input carries the original values: `'=1+2` → `=1+2`, `'+919845012345` → `+919845012345`.
"""

from __future__ import annotations

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
GUARD = "'"


def neutralise(cell: object) -> object:
    if isinstance(cell, str) and cell.startswith(TRIGGERS):
        return GUARD + cell
    return cell


def restore(cell: str) -> str:
    if cell.startswith(GUARD) and cell[1:2] and cell[1] in TRIGGERS:
        return cell[1:]
    return cell
