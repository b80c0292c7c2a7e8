"""[input] default_country: mobile numbers in any format are sent as country code + number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import config_for, customer_puts, mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.input.columns import resolve_headers
from batch_updater.input.reader import open_input
from batch_updater.output.csvsafe import restore
from batch_updater.rows.checks import MOBILE_ERROR
from batch_updater.rows.phones import MobileNumbers, NotAMobile
from batch_updater.rows.prepare import prepare_chunks
from batch_updater.rows.rewrite import counts_line

# The formats for seeded customers 1 to 5 (mobile(i) = 9198 + 8 digits), then three invalid.
FORMATTED = ["+91 98000 00001", "91-9800000002", "(91) 9800000003", "098000 00004", "9800000005"]
INVALID = {
    "12345": "is not a mobile number: too short for IN (10 digits after the country code 91)",
    "+999 1234567": "is not a mobile number: invalid country code (no country's code starts it: after + or 00"
                    " comes the country code, e.g. 91 for India)",
    "abc": "is not a mobile number: it holds characters a phone number does not have (digits, with spaces,"
           " dashes, dots, brackets and a leading + or 00)",
}


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = CliRunner().invoke(main, [*args, "--json"], env=env)
    assert result.stdout, result.output
    return result.exit_code, json.loads(result.stdout)


def _preview(summary: dict) -> list[dict]:
    return [json.loads(line) for line in Path(summary["reports"]["preview"]).read_text().splitlines()]


def test_every_format_reaches_the_right_customer_and_bad_numbers_are_refused_with_the_reason(
        tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "export.csv", ["identifierValue", "firstName"],
                       [[value, f"N{i}"] for i, value in enumerate(FORMATTED + list(INVALID))])
    config = write_config(tmp_path, server.url, input={"default_country": "IN"})
    code, summary = _cli("run", str(source), "--config", str(config))

    assert (code, summary["success"], summary["errors"]) == (1, 5, 3)
    sent = [r.query["identifierValue"] for r in customer_puts(server)]
    assert sorted(sent) == [mobile(i) for i in range(1, 6)]
    assert {r.outcome for r in customer_puts(server)} == {"ok"}
    errors = read_report(summary["reports"]["errors"])
    assert [(restore(e["identifierValue"]), e["_message"]) for e in errors] == [
        (value, f'identifierValue "{value}" {why}') for value, why in INVALID.items()]
    successes = read_report(summary["reports"]["success"])
    # the reports keep the file's values (a leading + is neutralised against formula injection, as always)
    assert [restore(s["identifierValue"]) for s in successes] == FORMATTED
    assert [s["_identifier"] for s in successes] == [mobile(i) for i in range(1, 6)]  # what was sent
    # the summary groups the causes without the values, each reason whole
    assert sorted(g["message"] for g in summary["top_errors"]) == sorted(
        f"identifierValue {why}" for why in INVALID.values())


def test_without_default_country_the_rules_are_as_strict_as_before(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "export.csv", ["identifierValue"], [[v] for v in FORMATTED + list(INVALID)])
    code, summary = _cli("run", str(source), "--config", str(write_config(tmp_path, server.url)))

    assert code == 1
    # 9800000005 has 8 to 15 digits: sent as it is, and the API finds nobody (what the issue reports)
    assert [r.query["identifierValue"] for r in customer_puts(server)] == ["9800000005"]
    errors = {restore(e["identifierValue"]): e["_message"] for e in read_report(summary["reports"]["errors"])}
    assert errors["9800000005"] == "Customer not found for the given identifiers"
    for value in FORMATTED[:4] + list(INVALID):
        assert errors[value] == f'identifierValue "{value}" {MOBILE_ERROR}'


def test_a_us_file(tmp_path):
    source = write_csv(tmp_path / "us.csv", ["identifierValue"], [["(415) 555-2671"], ["+1 415-555-2672"],
                                                                    ["555-2671"]])
    config = write_config(tmp_path, "http://127.0.0.1:9", input={"default_country": "us"})
    code, summary = _cli("validate", str(source), "--config", str(config))

    assert code == 1
    assert [p["query"]["identifierValue"] for p in _preview(summary)] == ["14155552671", "14155552672"]
    [error] = read_report(summary["reports"]["errors"])
    assert error["_message"] == ('identifierValue "555-2671" is not a mobile number: too short for US'
                                 " (10 digits after the country code 1)")


def test_every_mobile_column_is_normalised_and_only_the_mobile_rows_of_identifier_value(tmp_path):
    header = ["identifierName", "identifierValue", "identifiers.mobile", "commChannels.mobile.value",
              "commChannels.email.value"]
    source = write_csv(tmp_path / "in.csv", header, [
        ["Mobile", "+91 98000 00001", "98000-00002", "0 98000 00003", "a@example.com"],
        ["email", "b@example.com", "", "(91) 98000 00004", ""],
        ["", "919800000005", "919800000006", "", ""],
    ])
    config = write_config(tmp_path, "http://127.0.0.1:9", input={"default_country": "IN"})
    code, summary = _cli("validate", str(source), "--config", str(config))

    assert code == 0
    assert [(p["query"]["identifierName"], p["query"]["identifierValue"]) for p in _preview(summary)] == [
        ("mobile", mobile(1)), ("email", "b@example.com"), ("mobile", mobile(5))]
    bodies = [p["body"]["profiles"][0] for p in _preview(summary)]
    assert bodies[0]["identifiers"] == [{"type": "mobile", "value": mobile(2)}]
    assert bodies[0]["commChannels"][0] == {"type": "mobile", "value": mobile(3)}
    assert bodies[1]["commChannels"] == [{"type": "mobile", "value": mobile(4)}]
    assert bodies[2]["identifiers"] == [{"type": "mobile", "value": mobile(6)}]


def test_errors_csv_keeps_the_files_values_and_the_preview_the_sent_ones(tmp_path):
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "commChannels.email.value"],
                       [["+91 98000 00001", "bad@"], ["+91 98000 00002", "ok@example.com"]])
    config = write_config(tmp_path, "http://127.0.0.1:9", input={"default_country": "IN"})
    code, summary = _cli("validate", str(source), "--config", str(config))

    assert code == 1
    [error] = read_report(summary["reports"]["errors"])
    assert error["identifierValue"] == "'+91 98000 00001"  # as always; the reader takes the ' off
    assert error["_message"] == 'commChannels.email.value "bad@" is not an email address'
    assert [p["query"]["identifierValue"] for p in _preview(summary)] == [mobile(2)]
    code, again = _cli("validate", summary["reports"]["errors"], "--config", str(config))
    assert [e["_message"] for e in read_report(again["reports"]["errors"])] == [error["_message"]]


def test_only_changed_knows_a_customer_whatever_the_format(tmp_path, sandbox_server):
    server = sandbox_server()
    config = str(write_config(tmp_path, server.url, input={"default_country": "IN"}))
    first = write_csv(tmp_path / "monday.csv", ["identifierValue", "firstName"], [["+91 98000 00001", "Asha"]])
    second = write_csv(tmp_path / "tuesday.csv", ["identifierValue", "firstName"], [[mobile(1), "Asha"]])
    assert _cli("run", str(first), "--config", config, "--only-changed")[1]["success"] == 1
    code, summary = _cli("run", str(second), "--config", config, "--only-changed")

    assert (code, summary["requests"], summary["skipped"]) == (0, 0, 1)
    assert len(customer_puts(server)) == 1


def test_only_changed_is_not_reset_by_setting_the_rewrites(tmp_path, sandbox_server):
    """A clean file's customers stay unchanged when default_country, date_order or a value
    map is added: the digests hash the values as sent, not the settings that rewrote them."""
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "extendedFields.gender"],
                       [[mobile(1), "Female"], [mobile(2), "Male"]])
    before = str(write_config(tmp_path, server.url))
    assert _cli("run", str(source), "--config", before, "--only-changed")[1]["success"] == 2
    after = str(write_config(tmp_path, server.url, input={"default_country": "IN", "date_order": "DMY"},
                             **{'values."extendedFields.gender"': {"F": "Female", "M": "Male"}}))
    code, summary = _cli("run", str(source), "--config", after, "--only-changed")
    assert (code, summary["requests"], summary["skipped"]) == (0, 0, 2)


def test_the_prepared_chunks_count_the_rewritten_values(tmp_path):
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "commChannels.mobile.value"],
                       [["+91 98000 00001", mobile(1)], [mobile(2), "98000 00002"], ["12345", "(91) 9800000003"],
                        ["", ""]])
    config = config_for(tmp_path, "http://127.0.0.1:9", input={"default_country": "IN", "chunk_rows": 2})
    opened = open_input(source, config.input)
    plan = resolve_headers(opened.headers, {}, "in.csv")
    counts = [prepared.rewritten for prepared in prepare_chunks(opened, plan, config)]

    assert counts == [{"identifierValue": 1, "commChannels.mobile.value": 1}, {"commChannels.mobile.value": 1}]
    assert counts_line({"identifierValue": 3912, "extendedFields.dob": 1204}) == (
        "normalised: identifierValue 3,912, extendedFields.dob 1,204")
    assert counts_line({}) == ""


def test_a_country_that_is_not_one_is_a_config_error(tmp_path):
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    config = write_config(tmp_path, "http://127.0.0.1:9", input={"default_country": "INDIA"})
    result = CliRunner().invoke(main, ["validate", str(source), "--config", str(config)])

    assert result.exit_code == 2
    assert (f"{config} [input] default_country: expected a two-letter country code (ISO 3166 alpha-2,"
            " e.g. IN, US, GB), got 'INDIA'") in result.stderr


@pytest.mark.parametrize(("written", "sent"), [
    ("919800000001", "919800000001"),          # clean: the fast path
    ("+91 98000 00001", "919800000001"),
    ("+91-98000-00001", "919800000001"),
    ("0091 98000 00001", "919800000001"),       # India's international prefix
    ("91.98000.00001", "919800000001"),
    ("(+91) 98000/00001", "919800000001"),
    ("09800000001", "919800000001"),            # the trunk 0
    ("9800000001", "919800000001"),             # national
    ("9191234567", "919191234567"),             # a national number that starts with 91
    ("919800000001.0", "919800000001"),         # a spreadsheet's float
    ("9.19800000001E+11", "919800000001"),      # ... in exponent form, every digit kept
    ("447911123456", "447911123456"),           # another country's number, digits only
    ("+44 7911 123456", "447911123456"),
    ("00447911123456", "447911123456"),
])
def test_formats_in_india(written, sent):
    assert MobileNumbers("IN").normalise(written) == sent


@pytest.mark.parametrize(("written", "why"), [
    ("12345", "too short for IN (10 digits after the country code 91)"),
    ("98000000011", "too long for IN (10 digits after the country code 91)"),
    ("+91 98000 0000", "too short for IN (10 digits after the country code 91)"),
    ("+44 7911 12345", "too short for GB (10 digits after the country code 44)"),
    ("+999 1234567", "invalid country code"),
    ("9.198E+11", "a spreadsheet rounded it (it keeps 4 of its 12 digits)"),
    ("98000 00001 ext 5", "holds characters a phone number does not have"),
    ("٩٨٠٠٠٠٠٠٠١", "holds characters a phone number does not have"),  # digits, but not ASCII ones
    ("91980000002.7", "a number with a fraction"),   # not 919800000027: the dot is not a separator here
    ("8", "too few digits"),
    ("+91", "too few digits"),
])
def test_numbers_india_refuses(written, why):
    with pytest.raises(NotAMobile) as refused:
        MobileNumbers("IN").normalise(written)
    assert why in str(refused.value)


def test_the_fast_path_takes_exactly_the_clean_numbers():
    numbers = MobileNumbers("IN")
    assert numbers.clean("919800000001") and not numbers.clean("9800000001")
    assert not numbers.clean("9198000000012") and not numbers.clean("91980000000")
    us = MobileNumbers("US")
    assert us.clean("14155552671") and not us.clean("4155552671")


def test_the_counts_of_rewritten_values_reach_summary_json_and_the_last_lines(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "export.csv", ["identifierValue", "extendedFields.dateOfBirth"],
                       [[value, "17/05/1990"] for value in FORMATTED] + [[mobile(6), "1990-05-17"], ["12345", ""]])
    config = str(write_config(tmp_path, server.url, types={"extendedFields.dateOfBirth": "date"}))
    reading = ["--default-country", "in", "--date-order", "DMY"]  # the options, not the config file
    code, checked = _cli("validate", str(source), "--config", config, *reading)
    assert (code, checked["normalised"]) == (1, {"identifierValue": 5, "extendedFields.dateOfBirth": 5})

    result = CliRunner().invoke(main, ["run", str(source), "--config", config, *reading])
    assert result.exit_code == 1, result.output
    assert "normalised: identifierValue 5, extendedFields.dateOfBirth 5" in result.stdout.splitlines()
    summary = json.loads((tmp_path / "out" / "latest" / "summary.json").read_text())
    assert summary["normalised"] == {"identifierValue": 5, "extendedFields.dateOfBirth": 5}
    assert sorted(r.query["identifierValue"] for r in customer_puts(server)) == [mobile(i) for i in range(1, 7)]
    # a suggested command carries the reading options
    refused = CliRunner().invoke(main, ["run", str(source), "--config", config, *reading, "--max-invalid", "0",
                                        "--restart"])
    assert refused.exit_code == 2
    assert f"`batch-updater validate {source} --config {config} --default-country IN --date-order DMY`" in \
        refused.output


def test_a_file_with_nothing_to_rewrite_has_no_counts(tmp_path):
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    config = write_config(tmp_path, "http://127.0.0.1:9", input={"default_country": "IN"})
    code, summary = _cli("validate", str(source), "--config", str(config))
    assert (code, summary["normalised"]) == (0, {})


def test_state_forget_takes_a_mobile_in_any_format_under_default_country(tmp_path, sandbox_server):
    server = sandbox_server()
    config = str(write_config(tmp_path, server.url, input={"default_country": "IN"}))
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], [[mobile(1), "Asha"]])
    assert _cli("run", str(source), "--config", config, "--only-changed")[1]["success"] == 1

    refused = CliRunner().invoke(main, ["state", "forget", "12345", "--config", config])
    assert refused.exit_code == 2
    assert refused.output.strip().endswith('"12345" is not a mobile number: too short for IN (10 digits after'
                                           ' the country code 91): nothing was forgotten')
    # as copied from success.csv (a leading + neutralised), and the identifier's name in any case
    forget = CliRunner().invoke(main, ["state", "forget", "'+91 98000 00001", "--identifier-name", "MOBILE",
                                       "--config", config])
    assert forget.output.strip() == "forgot 1 customers"
    code, again = _cli("run", str(source), "--config", config, "--only-changed", "--restart")
    assert (code, again["requests"]) == (0, 1)  # forgotten: sent again
