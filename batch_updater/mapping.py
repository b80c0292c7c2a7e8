"""Turn a validated row into one request: the lookup query and the JSON body.

An empty cell means "leave this value alone", so it never reaches the payload.
Values arrive validated (schema.py), so conversion here cannot fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .columns import ColumnPlan

TRUE_WORDS = frozenset({"true", "yes", "1", "y", "t"})
INT_ATTRIBUTES = frozenset({"programId", "tierNumber", "loyaltyPoints"})


@dataclass(frozen=True, slots=True)
class Lookup:
    source: str
    identifier_name: str
    identifier_value: str
    account_id: str | None

    def query(self, use_async: bool = False) -> dict[str, str]:
        query = {"source": self.source, "identifierName": self.identifier_name,
                 "identifierValue": self.identifier_value}
        if self.account_id:
            query["accountId"] = self.account_id
        if use_async:
            query["use_async"] = "true"
        return query

    @property
    def customer_key(self) -> str:
        """Rows with the same key are one customer: never sent concurrently."""
        return f"{self.identifier_name}:{self.identifier_value.strip().lower()}"


@dataclass(frozen=True, slots=True)
class Payload:
    row: int
    lookup: Lookup
    body: dict[str, Any]


def to_bool(text: str) -> bool:
    return text.strip().lower() in TRUE_WORDS


class Mapper:
    """Compiled once per file header: builds payloads with one pass over the set cells."""

    def __init__(self, plan: ColumnPlan, *, source: str, identifier_name: str,
                 account_id: str | None):
        self._defaults = (source, identifier_name, account_id)
        self._lookup_at = {name: plan.position(name) for name in
                           ("identifierValue", "identifierName", "source", "accountId")}
        self._setters: list[tuple[int, Callable[[dict, str], None]]] = [
            (i, _setter(name)) for i, name in plan.used
            if name not in self._lookup_at or self._lookup_at[name] is None]

    def lookup(self, cells: Sequence[str]) -> Lookup:
        source, identifier_name, account_id = self._defaults
        at = self._lookup_at
        return Lookup(
            source=_cell(cells, at["source"]) or source,
            identifier_name=_cell(cells, at["identifierName"]) or identifier_name,
            identifier_value=_cell(cells, at["identifierValue"]).strip(),
            account_id=_cell(cells, at["accountId"]) or account_id,
        )

    def payload(self, row: int, cells: Sequence[str]) -> Payload:
        parts: dict[str, Any] = {}
        for i, setter in self._setters:
            value = cells[i]
            if value != "":
                setter(parts, value)
        return Payload(row, self.lookup(cells), _assemble(parts))


def _cell(cells: Sequence[str], position: int | None) -> str:
    return "" if position is None else cells[position]


def _setter(name: str) -> Callable[[dict, str], None]:
    """A function that files one cell's value under its place in `parts`."""
    if name == "loyaltyType":
        return lambda parts, v: parts.__setitem__("loyaltyType", v.strip())
    if name in ("firstName", "lastName"):
        return lambda parts, v: parts.setdefault("profile", {}).__setitem__(name, v)
    family, _, rest = name.partition(".")
    if family == "fields":
        return lambda parts, v: parts.setdefault("fields", {}).__setitem__(rest, v)
    if family == "extendedFields":
        return lambda parts, v: parts.setdefault("extendedFields", {}).__setitem__(rest, v)
    if family == "identifiers":
        return lambda parts, v: parts.setdefault("identifiers", []).append(
            {"type": rest, "value": v.strip()})
    if family == "loyaltyProgramEnrollments":
        convert = int if rest in INT_ATTRIBUTES else str.strip
        return lambda parts, v: parts.setdefault("enrolment", {}).__setitem__(rest, convert(v.strip()))
    return _channel_setter(rest)


def _channel_setter(rest: str) -> Callable[[dict, str], None]:
    kind, _, attribute = rest.partition(".")

    def channel(parts: dict) -> dict:
        return parts.setdefault("channels", {}).setdefault(kind, {"type": kind})

    if attribute in ("primary", "verified"):
        return lambda parts, v: channel(parts).__setitem__(attribute, to_bool(v))
    if attribute == "value":
        return lambda parts, v: channel(parts).__setitem__("value", v.strip())
    # lastViewedDate and meta.<key> both live in the channel's meta, as the API's examples show.
    key = attribute if attribute == "lastViewedDate" else attribute.partition(".")[2]
    return lambda parts, v: channel(parts).setdefault("meta", {}).__setitem__(key, v)


def _assemble(parts: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if "loyaltyType" in parts:
        body["loyaltyInfo"] = {"loyaltyType": parts["loyaltyType"]}
    profile = parts.get("profile", {})
    for key, out in (("fields", "fields"), ("identifiers", "identifiers")):
        if key in parts:
            profile[out] = parts[key]
    if "channels" in parts:
        profile["commChannels"] = list(parts["channels"].values())
    if profile:
        body["profiles"] = [profile]
    if "extendedFields" in parts:
        body["extendedFields"] = parts["extendedFields"]
    if "enrolment" in parts:
        body["loyaltyProgramEnrollments"] = [parts["enrolment"]]
    return body
