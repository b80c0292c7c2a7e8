"""The org's customers: derived on demand from their index (or loaded from a CSV), with
only the customers an update touched or an add created kept in memory, so a million seeded
customers cost nothing until they change."""

from __future__ import annotations

import copy
import csv
import itertools
import re

FIRST_ID = 100_000
NAME_LIMIT = 100  # the API cuts names past 100 characters
# identifierName -> (pattern that extracts the customer index, format that rebuilds the value)
SEED_FORMATS = {
    "mobile": (re.compile(r"9198(\d{8,})"), "9198{:08d}"),
    "email": (re.compile(r"customer(\d+)@example\.com"), "customer{}@example.com"),
    "externalId": (re.compile(r"EXT(\d{8,})"), "EXT{:08d}"),
}


def new_customer(id: int, mobile: str | None, email: str | None, externalId: str | None,
                 loyaltyType: str, firstName: str | None, lastName: str | None) -> dict:
    return {"id": id, "mobile": mobile, "email": email, "externalId": externalId,
            "loyaltyType": loyaltyType, "firstName": firstName, "lastName": lastName,
            "fields": {}, "extendedFields": {}, "identifiers": [], "commChannels": [],
            "enrollments": []}


class SeededCustomers:
    """Customer i (0 <= i < count) has id 100000 + i and identifiers derived from i."""

    def __init__(self, count: int):
        self.count = count
        self.next_id = FIRST_ID + count  # the id an add gives next

    def find(self, name: str, value: str) -> int | None:
        pattern, fmt = SEED_FORMATS[name]
        match = pattern.fullmatch(value)
        if match is None:
            return None
        index = int(match.group(1))
        # The round trip rejects look-alikes such as leading zeros ("customer07@...").
        if index < self.count and fmt.format(index) == value:
            return FIRST_ID + index
        return None

    def get(self, customer_id: int) -> dict | None:
        i = customer_id - FIRST_ID
        if not 0 <= i < self.count:
            return None
        return new_customer(customer_id, f"9198{i:08d}", f"customer{i}@example.com",
                            f"EXT{i:08d}", "loyalty", f"First{i}", f"Last{i}")


class CsvCustomers:
    """Customers from a CSV with the header
    id,mobile,email,externalId,loyaltyType,firstName,lastName (empty cells allowed but id)."""

    def __init__(self, path: str):
        self._by_id: dict[int, dict] = {}
        self._index: dict[tuple[str, str], int] = {}
        with open(path, newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                self._add({k: (v or None) for k, v in row.items()})
        self.next_id = max(self._by_id, default=FIRST_ID - 1) + 1

    def _add(self, row: dict) -> None:
        customer = new_customer(int(row["id"]), row["mobile"], row["email"], row["externalId"],
                                row["loyaltyType"] or "loyalty", row["firstName"], row["lastName"])
        self._by_id[customer["id"]] = customer
        for name in SEED_FORMATS:
            if customer[name]:
                self._index[name, customer[name]] = customer["id"]

    def find(self, name: str, value: str) -> int | None:
        return self._index.get((name, value))

    def get(self, customer_id: int) -> dict | None:
        return self._by_id.get(customer_id)


class CustomerStore:
    """Looks customers up, keeps the ones that updates changed and adds the new ones.

    Lookups use the identifiers the customer was created with: an update's new identifiers
    are stored on the customer but do not re-key it.
    """

    def __init__(self, source: SeededCustomers | CsvCustomers):
        self._source = source
        self._changed: dict[int, dict] = {}
        self._added: dict[tuple[str, str], int] = {}  # (identifierName, value) -> id
        self._ids = itertools.count(source.next_id)

    def find(self, name: str, value: str) -> int | None:
        found = self._source.find(name, value)
        return found if found is not None else self._added.get((name, value))

    def __contains__(self, customer_id: int) -> bool:
        return customer_id in self._changed or self._source.get(customer_id) is not None

    def get(self, customer_id: int) -> dict | None:
        """A private copy of the customer's current state, or None if there is none."""
        customer = self._changed.get(customer_id) or self._source.get(customer_id)
        return copy.deepcopy(customer)

    def put(self, customer: dict) -> None:
        self._changed[customer["id"]] = customer

    def new_id(self) -> int:
        return next(self._ids)

    def add(self, customer: dict) -> None:
        """Stores a new customer, found from now on by its mobile, email and externalId."""
        self.put(customer)
        for key in lookup_keys(customer):
            self._added[key] = customer["id"]

    @property
    def changed_count(self) -> int:
        return len(self._changed)


def lookup_keys(customer: dict) -> set[tuple[str, str]]:
    """The (identifierName, value) pairs that find the customer."""
    return {(name, customer[name]) for name in SEED_FORMATS if customer[name]}


def created(customer_id: int, identifiers: list[tuple[str, str]], body: dict,
            extended_fields: tuple[str, ...]) -> dict:
    """A new customer from a (validated) add body; a loyalty customer unless it says not,
    like the seeded ones (what Capillary does without loyaltyInfo is not documented)."""
    found_by = dict(identifiers)
    customer = new_customer(customer_id, found_by.get("mobile"), found_by.get("email"),
                            found_by.get("externalId"), "loyalty", None, None)
    return merge(customer, body, extended_fields)


def merge(customer: dict, body: dict, extended_fields: tuple[str, ...]) -> dict:
    """The customer after a (validated) update body; absent keys leave values alone."""
    loyalty_type = body.get("loyaltyInfo", {}).get("loyaltyType")
    if loyalty_type is not None:
        customer["loyaltyType"] = loyalty_type
    for profile in body.get("profiles", []):
        for name in ("firstName", "lastName"):
            if name in profile:
                customer[name] = str(profile[name])[:NAME_LIMIT]
        customer["fields"].update(profile.get("fields", {}))
        _merge_by_type(customer["identifiers"], profile.get("identifiers", []))
        _merge_by_type(customer["commChannels"], profile.get("commChannels", []))
    customer["extendedFields"].update(
        (k, v) for k, v in body.get("extendedFields", {}).items() if k in extended_fields)
    customer["enrollments"].extend(body.get("loyaltyProgramEnrollments", []))
    return customer


def _merge_by_type(current: list[dict], updates: list[dict]) -> None:
    """One entry per type: an update's entry amends the stored entry of its type."""
    by_type = {entry["type"]: entry for entry in current}
    for update in updates:
        if update["type"] in by_type:
            by_type[update["type"]].update(update)
        else:
            by_type[update["type"]] = dict(update)
            current.append(by_type[update["type"]])
