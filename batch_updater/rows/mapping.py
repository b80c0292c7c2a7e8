"""Turn validated rows into requests: the lookup query and the JSON body of each row.

An empty cell means "leave this value alone", so it never reaches the payload. Values
arrive validated (schema.py) and trimmed; they are converted by the same parsers that
validated them (rows/cells.py): whole numbers, booleans, dates and date-times with their
offset, allowed values in the config's spelling, enumerations in the API's spelling.

Speed: converters run once per distinct value of a column, and the body of each row is
built by a function compiled for the file's header (`_compile`): straight-line code with
one `if` per column, cheaper than interpreting a table of columns for every cell
(`build_body_reference` is that table, which a test holds the compiled code to). Lookup
and Payload are named tuples, cheaper to create than frozen dataclasses, and a million of
each are created per million rows (figures: bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .payload import Lookup, Payload
from .registry import ColumnRules, Convert


class Mapper:
    """Compiled once per file header (`names`: the canonical columns, in file order)."""

    def __init__(self, names: Sequence[str], *, source: str, identifier_name: str,
                 account_id: str | None, types: Mapping[str, str | tuple[str, ...]] | None = None,
                 timezone: str = "UTC", date_order: str = "YMD"):
        self.names = list(names)
        self._defaults = (source, identifier_name, account_id)
        rules = ColumnRules(types, timezone, date_order)
        self._spell = {name: rules.column(name).convert for name in ("source", "identifierName")}
        self._at = {name: i for i, name in enumerate(self.names)}
        columns = [rules.column(name) for name in self.names]
        # (part of the body, key, converter, position) for every column the body takes
        self._slots = [(c.part, c.key, c.convert, i) for i, c in enumerate(columns) if c.part is not None]
        self._build = _compile(self._slots)

    # -- map --------------------------------------------------------------------------------

    def lookups(self, columns: Sequence[Sequence[str]]) -> list[Lookup]:
        source, identifier_name, account_id = self._defaults
        n = len(columns[0]) if columns else 0

        def cells(name: str, default: str | None, convert: Convert | None = None) -> list:
            at = self._at.get(name)
            if at is None:
                return [default] * n
            if convert is None:
                return [value or default for value in columns[at]]
            return [convert(value) if value else default for value in columns[at]]

        return list(map(Lookup, cells("source", source, self._spell["source"]),
                        cells("identifierName", identifier_name, self._spell["identifierName"]),
                        cells("identifierValue", ""), cells("accountId", account_id)))

    def payloads(self, rows: Sequence[int], columns: Sequence[Sequence[str]]) -> list[Payload]:
        """One payload per row; `columns[i]` holds column `names[i]`'s trimmed cells."""
        cells = [columns[at] if convert is None else _converted(columns[at], convert)
                 for _, _, convert, at in self._slots]
        bodies = self._build(len(rows), *cells)
        return list(map(Payload, rows, self.lookups(columns), bodies))

    def payload(self, row: int, cells: Sequence[str]) -> Payload:
        """One row (its cells in `names` order): for tests and one-off use."""
        return self.payloads([row], [[cell] for cell in cells])[0]


def _converted(column: Sequence[str], convert: Convert) -> list[Any]:
    """Each cell converted (each distinct value once); None for an empty cell."""
    values = {value: convert(value) for value in set(column) if value}
    return [values[value] if value else None for value in column]


def _compile(slots: Sequence[tuple[str, str, Convert | None, int]]) -> Callable[..., list[dict]]:
    """The body builder for one header: build(n, cells of slot 0, cells of slot 1, ...).

    Straight-line Python, generated once per file; every key is written with repr(), so
    a header cannot inject code. Converted cells are None when empty; text cells are "".
    """
    variables = [f"v{i}" for i in range(len(slots))]
    present = {var: (var if convert is None else f"{var} is not None")
               for var, (_, _, convert, _) in zip(variables, slots)}
    by_part: dict[str, list[tuple[str, str]]] = {}
    for var, (part, key, _, _) in zip(variables, slots):
        by_part.setdefault(part, []).append((var, key))
    loop_vars = ", ".join(variables) + ("," if len(variables) == 1 else "")
    lines = [
        "def build(n" + "".join(f", c{var}" for var in variables) + "):",
        "    bodies = []",
        "    add = bodies.append",
        (f"    for {loop_vars} in zip({', '.join('c' + var for var in variables)}):"
         if variables else "    for _ in range(n):"),
        *_body_lines(by_part, present),
        "        add(body)",
        "    return bodies",
    ]
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<batch_updater.mapping body builder>", "exec"), namespace)
    return namespace["build"]


def _body_lines(by_part: dict[str, list[tuple[str, str]]], present: dict[str, str]) -> list[str]:
    """The loop body that builds one row's `body` (see build_body_reference for its meaning)."""
    def any_of(part: str) -> str:
        return " or ".join(f"({present[var]})" for var, _ in by_part[part])

    def sets(target: str, part: str, indent: str) -> list[str]:
        return [f"{indent}if {present[var]}: {target}[{key!r}] = {var}" for var, key in by_part[part]]

    def mapping(part: str, target: str, into: str, indent: str) -> list[str]:
        if part not in by_part:
            return []
        return ([f"{indent}if {any_of(part)}:", f"{indent}    part = {{}}"]
                + sets("part", part, indent + "    ") + [f"{indent}    {target}[{into!r}] = part"])

    body = ["        body = {}"]
    for var, _ in by_part.get("loyalty", []):
        body.append(f"        if {present[var]}: body['loyaltyInfo'] = {{'loyaltyType': {var}}}")
    body.append("        profile = {}")
    body += sets("profile", "profile", "        ") if "profile" in by_part else []
    body += mapping("fields", "profile", "fields", "        ")
    if "identifiers" in by_part:
        body += [f"        if {any_of('identifiers')}:", "            part = []"]
        body += [f"            if {present[var]}: part.append({{'type': {key!r}, 'value': {var}}})"
                 for var, key in by_part["identifiers"]]
        body.append("            profile['identifiers'] = part")
    kinds = list(dict.fromkeys(part.split(":", 1)[1] for part in by_part if ":" in part))
    if kinds:
        body.append("        channels = []")
        for kind in kinds:
            attributes, meta = f"channel:{kind}", f"meta:{kind}"
            tests = " or ".join(any_of(p) for p in (attributes, meta) if p in by_part)
            body += [f"        if {tests}:", f"            entry = {{'type': {kind!r}}}"]
            body += sets("entry", attributes, "            ") if attributes in by_part else []
            body += mapping(meta, "entry", "meta", "            ")
            body.append("            channels.append(entry)")
        body.append("        if channels: profile['commChannels'] = channels")
    body.append("        if profile: body['profiles'] = [profile]")
    body += mapping("extendedFields", "body", "extendedFields", "        ")
    if "enrolment" in by_part:
        body += [f"        if {any_of('enrolment')}:", "            part = {}"]
        body += sets("part", "enrolment", "            ")
        body.append("            body['loyaltyProgramEnrollments'] = [part]")
    return body


def build_body_reference(slots: Sequence[tuple[str, str, Convert | None, int]], values: Sequence[Any]) -> dict:
    """One row's body by interpreting the slots: what `_compile`'s generated code does,
    written plainly (the tests hold the generated code to it)."""
    given: dict[str, list[tuple[str, Any]]] = {}
    for (part, key, convert, _), value in zip(slots, values):
        if (value is not None) if convert is not None else bool(value):
            given.setdefault(part, []).append((key, value))
    body: dict[str, Any] = {}
    for _, value in given.get("loyalty", []):
        body["loyaltyInfo"] = {"loyaltyType": value}
    profile: dict[str, Any] = dict(given.get("profile", []))
    if "fields" in given:
        profile["fields"] = dict(given["fields"])
    if "identifiers" in given:
        profile["identifiers"] = [{"type": key, "value": value} for key, value in given["identifiers"]]
    channels = []
    for kind in dict.fromkeys(part.split(":", 1)[1] for part, _, _, _ in slots if ":" in part):
        attributes, meta = given.get(f"channel:{kind}"), given.get(f"meta:{kind}")
        if attributes or meta:
            channels.append({"type": kind, **dict(attributes or []), **({"meta": dict(meta)} if meta else {})})
    if channels:
        profile["commChannels"] = channels
    if profile:
        body["profiles"] = [profile]
    if "extendedFields" in given:
        body["extendedFields"] = dict(given["extendedFields"])
    if "enrolment" in given:
        body["loyaltyProgramEnrollments"] = [dict(given["enrolment"])]
    return body
