"""The request of one row, as the mapping makes it and the client sends it: the lookup
query (which customer) and the JSON body (what changes)."""

from __future__ import annotations

from typing import Any, NamedTuple


class Lookup(NamedTuple):
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
        return customer_key(self.identifier_name, self.identifier_value)


def customer_key(identifier_name: str, identifier_value: str) -> str:
    return f"{identifier_name}:{identifier_value.strip().lower()}"


class Payload(NamedTuple):
    row: int
    lookup: Lookup
    body: dict[str, Any]


def add_body(payload: Payload) -> dict[str, Any]:
    """The Add Customer API's body: the update's, with the lookup identifier among
    profiles[0].identifiers (an add needs the customer's identifiers; the update's
    query carried it instead). The update's body is left as it is."""
    lookup = payload.lookup
    body = dict(payload.body)
    profiles = [dict(profile) for profile in body.get("profiles") or [{}]]
    identifiers = list(profiles[0].get("identifiers") or [])
    if not any(entry.get("type") == lookup.identifier_name for entry in identifiers):
        identifiers.insert(0, {"type": lookup.identifier_name, "value": lookup.identifier_value})
    profiles[0]["identifiers"] = identifiers
    body["profiles"] = profiles
    return body
