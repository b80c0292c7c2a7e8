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
