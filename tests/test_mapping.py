"""Rows to requests: converted values, time zones, and properties over random rows."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from conftest import write_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_updater.config import load_config
from batch_updater.input.columns import resolve_headers
from batch_updater.input.csv_file import CsvInput
from batch_updater.input.reader import open_input
from batch_updater.rows.mapping import Mapper
from batch_updater.rows.prepare import prepare_chunks

MOBILE = "919845012345"


def mapper(names, *, timezone="UTC", types=None, **defaults):
    options = dict(source="INSTORE", identifier_name="mobile", account_id=None)
    options.update(defaults)
    return Mapper(names, timezone=timezone, types=types or {}, **options)


def body(cells: dict[str, str], **options) -> dict:
    names = ["identifierValue", *cells]
    return mapper(names, **options).payload(2, [MOBILE, *cells.values()]).body


def test_values_are_sent_with_the_api_types():
    assert body({
        "loyaltyType": "LOYALTY", "commChannels.email.value": "a@b.co",
        "commChannels.email.primary": "Yes", "commChannels.email.verified": "0",
        "loyaltyProgramEnrollments.programId": "699", "loyaltyProgramEnrollments.tierNumber": "2",
        "loyaltyProgramEnrollments.loyaltyPoints": "150.0",
    }) == {
        "loyaltyInfo": {"loyaltyType": "loyalty"},
        "profiles": [{"commChannels": [{"type": "email", "value": "a@b.co", "primary": True,
                                        "verified": False}]}],
        "loyaltyProgramEnrollments": [{"programId": 699, "tierNumber": 2, "loyaltyPoints": 150}],
    }


@pytest.mark.parametrize("zone, cell, sent", [
    ("Asia/Kolkata", "2027-12-31", "2027-12-31T23:59:59+05:30"),          # a date: end of that day
    ("Asia/Kolkata", "2027-12-31T10:00:00", "2027-12-31T10:00:00+05:30"),  # read in the zone
    ("Asia/Kolkata", "2027-12-31 10:00", "2027-12-31T10:00:00+05:30"),
    ("Asia/Kolkata", "2027-12-31T23:59:59-04:00", "2027-12-31T23:59:59-04:00"),  # offset kept
    ("Asia/Kolkata", "2027-12-31T23:59:59Z", "2027-12-31T23:59:59+00:00"),
    ("UTC", "2027-12-31", "2027-12-31T23:59:59+00:00"),
    ("America/New_York", "2027-01-15", "2027-01-15T23:59:59-05:00"),        # the offset of that date
    ("America/New_York", "2027-07-15", "2027-07-15T23:59:59-04:00"),
    ("Pacific/Kiritimati", "2027-12-31", "2027-12-31T23:59:59+14:00"),      # never a day earlier
    ("Pacific/Pago_Pago", "2027-12-31", "2027-12-31T23:59:59-11:00"),       # nor a day later
])
def test_expiry_dates_are_sent_with_an_offset_and_never_shift_a_day(zone, cell, sent):
    sent_body = body({"loyaltyProgramEnrollments.programId": "1",
                      "loyaltyProgramEnrollments.tierExpiryDate": cell,
                      "loyaltyProgramEnrollments.pointsExpiryDate": cell}, timezone=zone)
    assert sent_body["loyaltyProgramEnrollments"] == [
        {"programId": 1, "tierExpiryDate": sent, "pointsExpiryDate": sent}]


def test_typed_custom_fields_are_converted_and_untyped_ones_stay_text():
    types = {"fields.size": ("S", "M", "L"), "fields.visits": "int", "fields.spend": "float",
             "extendedFields.vip": "bool", "extendedFields.dateOfBirth": "date",
             "extendedFields.lastSeen": "datetime"}
    assert body({"fields.size": "m", "fields.visits": "12", "fields.spend": "12.5",
                 "fields.code": "007", "extendedFields.VIP": "yes",
                 "extendedFields.dateOfBirth": "1990-02-28", "extendedFields.lastSeen": "2026-11-20",
                 "extendedFields.city": "Mysuru"}, types=types, timezone="Asia/Kolkata") == {
        "profiles": [{"fields": {"size": "M", "visits": 12, "spend": 12.5, "code": "007"}}],
        "extendedFields": {"VIP": True, "dateOfBirth": "1990-02-28",
                           "lastSeen": "2026-11-20T00:00:00+05:30", "city": "Mysuru"},
    }


def test_lookup_takes_the_row_first_then_the_config_in_the_api_spelling():
    names = ["identifierValue", "identifierName", "source", "accountId"]
    m = mapper(names, source="WECHAT", account_id="77")
    rows = m.payloads([2, 3], [["a@b.co", "919845012345"], ["EMAIL", ""], ["website", ""], ["", "12"]])
    assert [p.lookup.query() for p in rows] == [
        {"source": "WEBSITE", "identifierName": "email", "identifierValue": "a@b.co", "accountId": "77"},
        {"source": "WECHAT", "identifierName": "mobile", "identifierValue": "919845012345", "accountId": "12"},
    ]
    assert rows[0].lookup.customer_key == "email:a@b.co"


def test_a_row_with_only_an_identifier_sends_an_empty_body():
    assert mapper(["identifierValue"]).payload(5, [MOBILE]).body == {}


def test_headers_cannot_inject_code_into_the_compiled_builder():
    name = "fields.x'] = 1; import os; x['y"
    assert body({name: "v"}) == {"profiles": [{"fields": {"x'] = 1; import os; x['y": "v"}}]}


# -- properties ---------------------------------------------------------------------------

TEXT_COLUMNS = ["firstName", "lastName", "fields.language", "fields.a.b", "extendedFields.city",
                "extendedFields.gender", "identifiers.externalId", "identifiers.wechat",
                "commChannels.wechat.value", "commChannels.wechat.meta.openId", "commChannels.line.value"]
cell_text = st.text(alphabet=string.ascii_letters + string.digits + " -_.é", max_size=8).map(str.strip)


def flatten(payload_body: dict) -> dict[str, str]:
    """The inverse of mapping for text columns: body -> {canonical column: value}."""
    cells: dict[str, str] = {}
    for profile in payload_body.get("profiles", []):
        for key in ("firstName", "lastName"):
            if key in profile:
                cells[key] = profile[key]
        for key, value in profile.get("fields", {}).items():
            cells[f"fields.{key}"] = value
        for entry in profile.get("identifiers", []):
            cells[f"identifiers.{entry['type']}"] = entry["value"]
        for channel in profile.get("commChannels", []):
            for key, value in channel.items():
                if key == "meta":
                    cells.update({f"commChannels.{channel['type']}.meta.{k}": v for k, v in value.items()})
                elif key != "type":
                    cells[f"commChannels.{channel['type']}.{key}"] = value
    for key, value in payload_body.get("extendedFields", {}).items():
        cells[f"extendedFields.{key}"] = value
    return cells


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_the_payload_holds_exactly_the_non_empty_mapped_cells(data):
    names = ["identifierValue"] + data.draw(st.lists(st.sampled_from(TEXT_COLUMNS), unique=True, max_size=8))
    rows = data.draw(st.lists(st.lists(cell_text, min_size=len(names) - 1, max_size=len(names) - 1),
                              min_size=1, max_size=5))
    columns = [[MOBILE] * len(rows)] + [list(column) for column in zip(*rows)] if len(names) > 1 \
        else [[MOBILE] * len(rows)]
    payloads = mapper(names).payloads(list(range(2, 2 + len(rows))), columns)
    for payload, row in zip(payloads, rows):
        expected = {name: cell for name, cell in zip(names[1:], row) if cell}
        assert flatten(payload.body) == expected
        assert payload.lookup.identifier_value == MOBILE


def _config(chunk_rows: int):
    return load_config(None, overrides={"api.base_url": "http://127.0.0.1:9", "api.username": "t",
                                        "input.chunk_rows": chunk_rows},
                       environ={"BATCH_UPDATER_PASSWORD": "x"})


row_kind = st.sampled_from(["valid", "valid", "valid", "invalid", "blank"])


@given(kinds=st.lists(row_kind, min_size=1, max_size=40), chunk_rows=st.integers(1, 12))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_row_numbers_survive_chunking(tmp_path_factory, kinds, chunk_rows):
    folder = tmp_path_factory.mktemp("chunks")
    cells = {"valid": lambda i: [f"9198{i:08d}", f"N{i}"], "invalid": lambda i: ["12", f"N{i}"],
             "blank": lambda i: ["", ""]}
    source = write_csv(Path(folder) / "in.csv", ["identifierValue", "firstName"],
                       [cells[kind](i) for i, kind in enumerate(kinds)])
    config = _config(chunk_rows)
    reader = open_input(source, config.input)
    assert isinstance(reader, CsvInput)
    plan = resolve_headers(reader.headers, {}, str(source))
    sent, settled = {}, {}
    for prepared in prepare_chunks(reader, plan, config):
        sent.update({p.row: p for p in prepared.payloads})
        settled.update({o.row: o for o in prepared.outcomes})
    expected_rows = range(2, 2 + len(kinds))
    assert sorted([*sent, *settled]) == list(expected_rows)
    for row, kind in zip(expected_rows, kinds):
        i = row - 2
        if kind == "valid":
            assert sent[row].lookup.identifier_value == f"9198{i:08d}"
            assert sent[row].body == {"profiles": [{"firstName": f"N{i}"}]}
        elif kind == "invalid":
            assert settled[row].stage.value == "validation" and "identifierValue" in settled[row].message
        else:
            assert settled[row].message == "blank row"


def test_chunk_preparation_leaves_the_garbage_collector_as_it_found_it():
    import gc

    from batch_updater.rows.prepare import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


# The generated body builder against its plain reference ---------------------------------------

_PARTS = ["loyalty", "profile", "fields", "identifiers", "channel:mobile", "meta:mobile", "channel:email",
          "extendedFields", "enrolment"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PARTS), st.sampled_from(["a", "b", "c'", 'd"']), st.booleans()),
                min_size=0, max_size=8, unique_by=lambda slot: (slot[0], slot[1])),
       st.integers(min_value=0, max_value=4), st.randoms())
def test_the_compiled_body_builder_does_what_its_reference_does(parts, rows, rng):
    from batch_updater.rows.mapping import _compile, build_body_reference

    slots = [(part, key, (int if converted else None), n) for n, (part, key, converted) in enumerate(parts)]

    def cell(converted: bool):
        if converted:
            return rng.choice([None, 0, 1, False, True, 7])
        return rng.choice(["", "x", "0", "y z"])

    table = [[cell(convert is not None) for _, _, convert, _ in slots] for _ in range(rows)]
    columns = [[row[n] for row in table] for n in range(len(slots))]
    assert _compile(slots)(rows, *columns) == [build_body_reference(slots, row) for row in table]


def test_the_registry_knows_every_field_type_the_config_accepts():
    from batch_updater.rows.cells import FIELD_TYPES
    from batch_updater.rows.registry import ColumnRules

    assert set(FIELD_TYPES) == set(ColumnRules()._typed_fields()) | {"string"}
