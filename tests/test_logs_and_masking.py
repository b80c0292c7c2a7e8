"""Masking of identifiers, and logs (text or JSON lines) that carry run and job ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import mobile, write_config, write_csv

from batch_updater.cli import main
from batch_updater.output.masking import mask_identifier, mask_text


@pytest.mark.parametrize("value, masked", [
    ("919800000042", "9198****0042"),
    ("asha@example.com", "a***@example.com"),
    ("EXT00000042", "EX*******42"),
    ("abc", "***"),
    ("", ""),
])
def test_identifiers_are_masked(value, masked):
    assert mask_identifier(value) == masked


def test_masking_inside_log_text():
    assert (mask_text("row 5: 919800000042 and asha.k@example.co.in failed")
            == "row 5: 9198****0042 and a***@example.co.in failed")


def test_json_logs_carry_run_and_job_ids_and_mask_identifiers(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)], ["919700000000"]])
    config = write_config(tmp_path, server.url)
    log_file = tmp_path / "run.log"
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--log-format", "json",
                                       "--log-level", "debug", "--log-file", str(log_file), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines, "no log lines"
    run_id = Path(summary["reports"]["summary"]).parent.name
    assert all(line["run_id"] == run_id and line["job_id"] == summary["job_id"] for line in lines)
    assert {"time", "level", "message"} <= set(lines[0])
    text = log_file.read_text()
    assert "919700000000" not in text and "9197****0000" in text
    assert any(line["message"].startswith("completed_with_errors: 2 rows") for line in lines)
