"""--max-invalid N or N%: a file worse than that sends nothing and exits 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import customer_puts, mobile, write_config, write_csv

from batch_updater.cli import main

MOBILE_ERROR = ("is not a mobile number: digits only with the country code, 8 to 15 digits"
                " (e.g. 919845012345)")


def four_rows_two_invalid(tmp_path):
    return write_csv(tmp_path / "in.csv", ["identifierValue", "loyaltyType"],
                     [[mobile(1), "loyalty"], ["12", "loyalty"], [mobile(3), "gold"], [mobile(4), ""],
                      ["", ""]])  # a blank row does not count


@pytest.mark.parametrize("limit", ["1", "49%", "0"])
def test_a_file_worse_than_the_limit_sends_nothing_and_exits_2(tmp_path, sandbox_server, limit):
    server = sandbox_server()
    source = four_rows_two_invalid(tmp_path)
    config = write_config(tmp_path, server.url)
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--max-invalid", limit])

    assert result.exit_code == 2
    assert result.output == (
        f"batch-updater: error: {source}: 2 of 4 rows are invalid, more than max_invalid = {limit}, so"
        f' nothing was sent. First problems: row 3: identifierValue "12" {MOBILE_ERROR}; row 4:'
        ' loyaltyType "gold" is not loyalty or non_loyalty. Run `batch-updater validate'
        f" {source} --config {config}` for every problem in errors.csv, fix the file and run again\n")
    assert customer_puts(server) == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("success.csv"))


@pytest.mark.parametrize("limit", ["2", "50%"])
def test_a_file_within_the_limit_runs(tmp_path, sandbox_server, limit):
    server = sandbox_server()
    config = write_config(tmp_path, server.url, input={"max_invalid": limit})
    result = CliRunner().invoke(main, ["run", str(four_rows_two_invalid(tmp_path)), "--config", str(config)])

    assert result.exit_code == 1, result.output
    assert len(customer_puts(server)) == 2


def test_validate_and_dry_run_write_the_full_report_whatever_the_limit(tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:9", input={"max_invalid": "0"})
    source = four_rows_two_invalid(tmp_path)
    for command in (["validate", str(source)], ["run", str(source), "--dry-run"]):
        result = CliRunner().invoke(main, [*command, "--config", str(config)])
        assert result.exit_code == 1, result.output
        assert "2 invalid" in result.output


@pytest.mark.parametrize("value", ["ten", "-1", "1.5", "150%"])
def test_a_bad_limit_is_a_config_error(tmp_path, value):
    config = write_config(tmp_path, "http://127.0.0.1:9")
    result = CliRunner().invoke(main, ["validate", "in.csv", "--config", str(config), "--max-invalid", value])
    assert result.exit_code == 2
    assert result.output == ("batch-updater: error: --max-invalid: expected a number of rows or a"
                             f" percentage (e.g. 100 or 5%), got {value!r}\n")
