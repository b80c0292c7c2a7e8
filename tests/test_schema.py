"""Every field of the request body: valid values pass, each kind of invalid value gets its message.

The table runs each case through the product's path (headers -> ChunkPreparer.check:
trimming, the pandera schema, frame-wide checks); a few cases then go through a whole
dry run, to show the message lands in errors.csv against the right row.
"""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import config_for, read_report, write_csv

from batch_updater.config import load_config
from batch_updater.input.columns import resolve_headers
from batch_updater.input.reader import Chunk
from batch_updater.rows.prepare import ChunkPreparer
from batch_updater.runner import run

MOBILE = "919845012345"
PUSH_TOKEN = "fcm-token-0123456789abcdef"
MOBILE_ERROR = ("is not a mobile number: digits only with the country code, 8 to 15 digits"
                " (e.g. 919845012345)")
DATE_TIME_ERROR = ("is not a date or date-time (use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS or"
                   " YYYY-MM-DDTHH:MM:SS+05:30)")
BOOLEAN_ERROR = "is not true or false (use true/false, yes/no or 1/0)"
SOURCES_LISTED = ("FACEBOOK, WEB_ENGAGE, WECHAT, INSTORE, MARTJACK, TMALL, TAOBAO, JD, ECOMMERCE,"
                  " WEBSITE, LINE, MOBILE_APP")
TYPES = {"fields.size": ["S", "M", "L"], "fields.visits": "int", "fields.spend": "float",
         "extendedFields.vip": "bool", "extendedFields.dateOfBirth": "date",
         "extendedFields.lastSeen": "datetime", "extendedFields.note": "string"}


def config(**input_settings):
    overrides = {"api.base_url": "http://127.0.0.1:9", "api.username": "till"}
    overrides.update({f"input.{k}": v for k, v in input_settings.items()})
    base = load_config(None, overrides=overrides, environ={"BATCH_UPDATER_PASSWORD": "x"})
    from dataclasses import replace
    types = {k: tuple(v) if isinstance(v, list) else v for k, v in TYPES.items()}
    return replace(base, input=replace(base.input, types=types))


def problems(cells: dict[str, str | list[str]], **settings) -> dict[int, str]:
    """{row: message} for rows built from `cells` (a value, or one value per row)."""
    cells = {"identifierValue": MOBILE, **cells}
    length = max(len(v) if isinstance(v, list) else 1 for v in cells.values())
    columns = {k: v if isinstance(v, list) else [v] * length for k, v in cells.items()}
    headers = list(columns)
    plan = resolve_headers(headers, {}, "test.csv")
    frame = pd.DataFrame({i: columns[h] for i, h in enumerate(headers)}, dtype=object)
    return ChunkPreparer(plan, config(**settings)).check(Chunk(2, frame)).problems


VALID = [
    ({"identifierValue": "  919845012345 "}, "trimmed"),
    ({"identifierName": "email", "identifierValue": "asha@example.com"}, "email identifier"),
    ({"identifierName": "externalId", "identifierValue": "EXT-00017"}, "externalId: any text"),
    ({"identifierName": "MOBILE"}, "identifierName in any case"),
    ({"source": "website"}, "source in any case"),
    ({"source": "WECHAT", "accountId": "1234"}, "multi-account source with its account"),
    ({"loyaltyType": "loyalty"}, "loyalty"),
    ({"loyaltyType": "Non_Loyalty"}, "non_loyalty in any case"),
    ({"firstName": "A" * 100, "lastName": "Ré"}, "names up to 100 characters"),
    ({"commChannels.mobile.value": "919845012345"}, "mobile channel"),
    ({"commChannels.email.value": "asha.rao+crm@mail.example.co.in"}, "email channel"),
    ({"commChannels.email.value": "a@b.co", "commChannels.email.primary": "TRUE",
      "commChannels.email.verified": "no"}, "flags any case"),
    ({"commChannels.email.value": "a@b.co", "commChannels.email.primary": "1",
      "commChannels.email.verified": "0"}, "flags as 1/0"),
    ({"commChannels.email.value": "a@b.co", "commChannels.email.primary": "Yes"}, "flags yes/no"),
    ({"commChannels.email.value": "a@b.co", "commChannels.email.meta.residence": "anything at all"},
     "meta is free text"),
    ({"commChannels.wechat.value": "wx-openid-17"}, "wechat value: any text"),
    ({"commChannels.mobilePush.value": PUSH_TOKEN, "commChannels.mobilePush.lastViewedDate": "2026-11-20"},
     "push with a date"),
    ({"commChannels.mobilePush.value": PUSH_TOKEN,
      "commChannels.mobilePush.lastViewedDate": "2026-11-20T10:30:00+05:30"}, "push with a date-time"),
    ({"source": "MOBILE_APP", "accountId": "9", "commChannels.mobilePush.value": PUSH_TOKEN},
     "push from a push source"),
    ({"identifiers.mobile": "919845012346", "identifiers.email": "a@b.co",
      "identifiers.externalId": "E-1", "identifiers.line": "line-user"}, "identifiers"),
    ({"fields.anything": "free text", "extendedFields.city": "Mysuru"}, "untyped fields: text"),
    ({"fields.size": "m"}, "allowed value, any case"),
    ({"fields.visits": "12", "fields.spend": "12.50", "extendedFields.vip": "yes",
      "extendedFields.dateOfBirth": "1990-02-28", "extendedFields.lastSeen": "2026-11-20 10:30"},
     "typed fields"),
    ({"extendedFields.note": "12"}, "a field typed string"),
    ({"loyaltyProgramEnrollments.programId": "699", "loyaltyProgramEnrollments.tierNumber": "1",
      "loyaltyProgramEnrollments.loyaltyPoints": "0",
      "loyaltyProgramEnrollments.tierExpiryDate": "2027-12-31",
      "loyaltyProgramEnrollments.pointsExpiryDate": "2027-06-30T23:59:59+05:30"}, "enrolment"),
    ({"loyaltyProgramEnrollments.programId": "699", "loyaltyProgramEnrollments.loyaltyPoints": "150.0",
      "loyaltyProgramEnrollments.tierExpiryDate": "2027-12-31T23:59:59Z"}, "150.0 and Z"),
]


@pytest.mark.parametrize("cells, why", VALID, ids=[why for _, why in VALID])
def test_valid_values_pass(cells, why):
    assert problems(cells) == {}


INVALID = [
    ({"identifierValue": "", "firstName": "Asha"}, "identifierValue is required"),
    ({"identifierValue": "98450"}, f'identifierValue "98450" {MOBILE_ERROR}'),
    ({"identifierValue": "+919845012345"}, f'identifierValue "+919845012345" {MOBILE_ERROR}'),
    ({"identifierValue": "9198450123456789"}, f'identifierValue "9198450123456789" {MOBILE_ERROR}'),
    ({"identifierName": "email", "identifierValue": "bob@"}, 'identifierValue "bob@" is not an email address'),
    ({"identifierName": "phone"}, 'identifierName "phone" is not one of mobile, email, externalId'),
    ({"source": "SHOP"}, f'source "SHOP" is not a source the API knows ({SOURCES_LISTED})'),
    ({"source": "WECHAT"},
     "accountId is required for multi-account sources (WECHAT, FACEBOOK, MOBILE_APP, LINE)"),
    ({"loyaltyType": "gold"}, 'loyaltyType "gold" is not loyalty or non_loyalty'),
    ({"firstName": "A" * 101}, 'firstName "' + "A" * 59 + '…" is longer than 100 characters'),
    ({"lastName": "B" * 150}, 'lastName "' + "B" * 59 + '…" is longer than 100 characters'),
    ({"commChannels.mobile.value": "12-34"}, f'commChannels.mobile.value "12-34" {MOBILE_ERROR}'),
    ({"commChannels.email.value": "bob@"}, 'commChannels.email.value "bob@" is not an email address'),
    ({"commChannels.email.value": "bob@example"},
     'commChannels.email.value "bob@example" is not an email address'),
    ({"commChannels.email.value": "a@b.co", "commChannels.email.primary": "maybe"},
     f'commChannels.email.primary "maybe" {BOOLEAN_ERROR}'),
    ({"commChannels.email.value": "a@b.co", "commChannels.email.verified": "2"},
     f'commChannels.email.verified "2" {BOOLEAN_ERROR}'),
    ({"commChannels.email.primary": "true"},
     "commChannels.email.value is required when other commChannels.email columns are set"),
    ({"commChannels.mobilePush.value": "short token"},
     'commChannels.mobilePush.value "short token" is not a push token (16 or more characters, no spaces)'),
    ({"commChannels.mobilePush.value": PUSH_TOKEN, "commChannels.mobilePush.lastViewedDate": "20/11/2026"},
     f'commChannels.mobilePush.lastViewedDate "20/11/2026" {DATE_TIME_ERROR}'),
    ({"commChannels.mobilePush.value": PUSH_TOKEN, "commChannels.mobilePush.lastViewedDate": "2026-02-30"},
     f'commChannels.mobilePush.lastViewedDate "2026-02-30" {DATE_TIME_ERROR}'),
    ({"source": "JD", "commChannels.mobilePush.value": PUSH_TOKEN},
     "commChannels.mobilePush is only supported for sources MOBILE_APP, INSTORE, MARTJACK, ECOMMERCE, WEBSITE"),
    ({"identifiers.mobile": "0"}, f'identifiers.mobile "0" {MOBILE_ERROR}'),
    ({"identifiers.email": "not-an-email"}, 'identifiers.email "not-an-email" is not an email address'),
    ({"fields.size": "XL"}, 'fields.size "XL" is not one of S, M, L'),
    ({"fields.visits": "12.5"}, 'fields.visits "12.5" is not a whole number'),
    ({"fields.spend": "nan"}, 'fields.spend "nan" is not a number (e.g. 12.5)'),
    ({"fields.spend": "12,50"}, 'fields.spend "12,50" is not a number (e.g. 12.5)'),
    ({"extendedFields.vip": "perhaps"}, f'extendedFields.vip "perhaps" {BOOLEAN_ERROR}'),
    ({"extendedFields.dateOfBirth": "31/01/1990"},
     'extendedFields.dateOfBirth "31/01/1990" is not a date (use YYYY-MM-DD)'),
    ({"extendedFields.dateOfBirth": "1990-02-30"},
     'extendedFields.dateOfBirth "1990-02-30" is not a date (use YYYY-MM-DD)'),
    ({"extendedFields.lastSeen": "yesterday"}, f'extendedFields.lastSeen "yesterday" {DATE_TIME_ERROR}'),
    ({"loyaltyProgramEnrollments.programId": "0"},
     'loyaltyProgramEnrollments.programId "0" must be a whole number ≥ 1'),
    ({"loyaltyProgramEnrollments.programId": "P699"},
     'loyaltyProgramEnrollments.programId "P699" must be a whole number ≥ 1'),
    ({"loyaltyProgramEnrollments.programId": "699", "loyaltyProgramEnrollments.tierNumber": "0"},
     'loyaltyProgramEnrollments.tierNumber "0" must be a whole number ≥ 1'),
    ({"loyaltyProgramEnrollments.programId": "699", "loyaltyProgramEnrollments.loyaltyPoints": "-5"},
     'loyaltyProgramEnrollments.loyaltyPoints "-5" must be a whole number ≥ 0'),
    ({"loyaltyProgramEnrollments.programId": "699", "loyaltyProgramEnrollments.loyaltyPoints": "1e3"},
     'loyaltyProgramEnrollments.loyaltyPoints "1e3" must be a whole number ≥ 0'),
    ({"loyaltyProgramEnrollments.programId": "699", "loyaltyProgramEnrollments.tierExpiryDate": "2027-13-01"},
     f'loyaltyProgramEnrollments.tierExpiryDate "2027-13-01" {DATE_TIME_ERROR}'),
    ({"loyaltyProgramEnrollments.programId": "699",
      "loyaltyProgramEnrollments.pointsExpiryDate": "2027-12-31T23:59:59+25:00"},
     f'loyaltyProgramEnrollments.pointsExpiryDate "2027-12-31T23:59:59+25:00" {DATE_TIME_ERROR}'),
    ({"loyaltyProgramEnrollments.loyaltyPoints": "10"},
     "loyaltyProgramEnrollments.programId is required when other loyaltyProgramEnrollments columns are set"),
]


@pytest.mark.parametrize("cells, message", INVALID, ids=[m[:60] for _, m in INVALID])
def test_each_kind_of_invalid_value_names_its_column(cells, message):
    assert problems(cells) == {2: message}


def test_every_problem_of_a_row_is_in_one_message_in_column_order():
    found = problems({
        "commChannels.email.value": ["a@b.co", "bob@", "c@d.co"],
        "loyaltyProgramEnrollments.programId": ["699", "699", "699"],
        "loyaltyProgramEnrollments.loyaltyPoints": ["1", "-5", "2"],
        "loyaltyType": ["loyalty", "gold", "loyalty"],
    })
    assert found == {3: 'commChannels.email.value "bob@" is not an email address;'
                        ' loyaltyProgramEnrollments.loyaltyPoints "-5" must be a whole number ≥ 0;'
                        ' loyaltyType "gold" is not loyalty or non_loyalty'}


def test_rows_are_numbered_as_a_spreadsheet_shows_them_and_blank_rows_are_not_judged():
    found = problems({"identifierValue": ["919845012345", "", "12", "   "],
                      "firstName": ["A", "", "C", " "]})
    assert found == {4: f'identifierValue "12" {MOBILE_ERROR}'}


def test_the_default_identifier_name_decides_the_format():
    assert problems({"identifierValue": "asha@example.com"}) == {
        2: f'identifierValue "asha@example.com" {MOBILE_ERROR}'}


def test_a_value_in_a_column_without_header_makes_the_row_invalid():
    plan = resolve_headers(["identifierValue", "", "firstName"], {}, "t.csv")
    frame = pd.DataFrame([[MOBILE, "", "A"], [MOBILE, "stray", "B"]], dtype=object)
    found = ChunkPreparer(plan, config()).check(Chunk(2, frame)).problems
    assert found == {3: 'column 2 (no header) "stray" holds a value: give the column a header, or clear it'}


def test_messages_keep_to_one_line():
    found = problems({"loyaltyType": "gold\nsilver"})
    assert found == {2: 'loyaltyType "gold\\nsilver" is not loyalty or non_loyalty'}


def test_a_dry_run_reports_each_invalid_row_with_its_row_and_message(tmp_path):
    source = write_csv(tmp_path / "in.csv",
                       ["identifierValue", "commChannels.email.value", "loyaltyProgramEnrollments.programId",
                        "loyaltyProgramEnrollments.loyaltyPoints"],
                       [[MOBILE, "a@b.co", "699", "10"],
                        [MOBILE, "bob@", "699", "-5"],
                        ["12", "", "", ""]])
    summary = run(config_for(tmp_path, "http://127.0.0.1:9"), source, dry_run=True)

    assert (summary.validation_errors, summary.skipped) == (2, 1)
    errors = {r["_row"]: (r["_stage"], r["_message"]) for r in read_report(summary.reports["errors"])}
    assert errors == {
        "3": ("validation", 'commChannels.email.value "bob@" is not an email address;'
                            ' loyaltyProgramEnrollments.loyaltyPoints "-5" must be a whole number ≥ 0'),
        "4": ("validation", f'identifierValue "12" {MOBILE_ERROR}'),
    }
