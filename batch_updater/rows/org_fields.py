"""The org's own rules about a file's columns: `[api] extended_fields` and `[api]
custom_fields` (the names it has), and upsert's `[api] add_requires` (what a new
customer must have).

Capillary accepts an update naming an extended field the org has not configured, drops
the field and answers 200 with warning 91015: the night looks green and the data is
lost. When the config lists the org's names, a column naming another one stops the
file before a request is spent, with the nearest configured name as a suggestion.
"""

from __future__ import annotations

import difflib

from ..config import ApiSettings
from ..errors import InputError
from ..input.columns import ColumnPlan

FAMILIES = (("extendedFields.", "extended_fields", "an extended field"),
            ("fields.", "custom_fields", "a custom field"))


def check_org_fields(plan: ColumnPlan, api: ApiSettings, source: str) -> None:
    """Raise InputError naming every column whose field the org does not have."""
    problems = []
    for position, name in plan.used:
        for prefix, setting, kind in FAMILIES:
            known = getattr(api, setting)
            if known is None or not name.startswith(prefix):
                continue
            field = name[len(prefix):]
            if field not in known:
                problems.append(f"column '{plan.headers[position]}': '{field}' is not {kind} of the org"
                                f" ([api] {setting}){_suggestion(field, known)}")
    if problems:
        raise InputError(f"{source}: " + "; ".join(problems) + ": rename the column, or add the name to"
                         " the list if the org has it (nothing was sent)")
    if api.mode == "upsert":
        _check_add_requires(plan, api.add_requires or (), source)


def _check_add_requires(plan: ColumnPlan, required: tuple[str, ...], source: str) -> None:
    names = {name for _, name in plan.used}
    missing = [name for name in required if name not in names]
    if missing:
        raise InputError(f"{source}: upsert mode adds customers that [api] add_requires says need"
                         f" {', '.join(missing)}, and the file has no such column: add it, or take it out of"
                         " add_requires (nothing was sent)")


def _suggestion(name: str, known: tuple[str, ...]) -> str:
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{by_lower[close[0]]}'?)"
    return f" (known: {', '.join(known)})" if known else " (the list is empty)"
