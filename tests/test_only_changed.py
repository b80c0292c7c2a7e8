"""Issue 8: send only what changed since the last acknowledged sync."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from batch_updater.cli import main
from batch_updater.sandbox import Faults

from conftest import customer_puts, mobile, read_report, write_config, write_csv

HEADER = ["identifierValue", "firstName", "extendedFields.city"]


def _rows(n: int) -> list[list[str]]:
    return [[mobile(i), f"Name{i}", "Mysuru"] for i in range(n)]


def _run(*args: str) -> dict:
    result = CliRunner().invoke(main, ["run", *args, "--json"])
    assert result.exit_code in (0, 1) and result.stdout, result.output
    return json.loads(result.stdout)


def test_the_second_run_sends_nothing_and_a_change_sends_exactly_the_changed_rows(tmp_path, sandbox_server):
    server = sandbox_server(customers=5000)
    rows = _rows(3000)
    source = write_csv(tmp_path / "export.csv", HEADER, rows)
    config = str(write_config(tmp_path, server.url, limits={"concurrency": 32}))

    first = _run(str(source), "--config", config, "--only-changed")
    assert (first["success"], first["requests"]) == (3000, 3000)
    again = _run(str(source), "--config", config, "--only-changed", "--restart")
    assert (again["requests"], again["skipped"], again["exit_code"]) == (0, 3000, 0)
    skipped = read_report(again["reports"]["skipped"])
    assert {r["_reason"] for r in skipped} == {"unchanged: the API acknowledged the same values before"}

    changed = set(range(0, 3000, 100))   # 1%
    for i in changed:
        rows[i][2] = "Bengaluru"
    write_csv(source, HEADER, rows)
    before = len(customer_puts(server))
    third = _run(str(source), "--config", config, "--only-changed")
    sent = customer_puts(server)[before:]
    assert sorted(r.query["identifierValue"] for r in sent) == sorted(mobile(i) for i in changed)
    assert (third["requests"], third["success"], third["skipped"]) == (30, 30, 2970)


def test_full_sends_everything_and_refreshes_the_state(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "export.csv", HEADER, _rows(20))
    config = str(write_config(tmp_path, server.url))
    _run(str(source), "--config", config)                 # a plain run keeps the state too
    full = _run(str(source), "--config", config, "--full", "--restart")
    assert full["requests"] == 20
    copy = str(shutil.copy(source, tmp_path / "export-tomorrow.csv"))
    assert _run(copy, "--config", config, "--only-changed")["requests"] == 0


def test_failed_and_in_doubt_rows_are_sent_again_next_time(tmp_path, sandbox_server):
    server = sandbox_server()
    rows = _rows(30) + [["919700000000", "Ghost", "Pune"]]
    source = write_csv(tmp_path / "export.csv", HEADER, rows)
    config = str(write_config(tmp_path, server.url, limits={"max_attempts": 1}))
    server.state.faults = Faults(drop_after=0.2)          # applied, but the answer is lost
    first = _run(str(source), "--config", config, "--only-changed")
    assert first["network_errors"] > 0 and first["errors"] == first["network_errors"] + 1
    failed = {r["identifierValue"] for r in read_report(first["reports"]["errors"])}

    server.state.faults = Faults()
    before = len(customer_puts(server))
    second = _run(str(source), "--config", config, "--only-changed", "--restart")
    resent = {r.query["identifierValue"] for r in customer_puts(server)[before:]}
    assert resent == failed
    assert second["requests"] == len(failed)


def test_later_rows_of_a_customer_follow_an_earlier_changed_row(tmp_path, sandbox_server):
    server = sandbox_server()
    rows = [[mobile(1), "Old", "Pune"], [mobile(1), "New", "Pune"], [mobile(2), "B", "Pune"]]
    source = write_csv(tmp_path / "export.csv", HEADER, rows)
    config = str(write_config(tmp_path, server.url))
    _run(str(source), "--config", config)
    before = len(customer_puts(server))
    _run(str(source), "--config", config, "--only-changed", "--restart")
    names = [r.body["profiles"][0]["firstName"] for r in customer_puts(server)[before:]]
    # "Old" differs from the last acknowledged ("New"), so both rows go, in file order
    assert names == ["Old", "New"]


def test_state_command_shows_and_forgets(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "export.csv", HEADER, _rows(10))
    config = str(write_config(tmp_path, server.url))
    _run(str(source), "--config", config)
    runner = CliRunner()
    stats = runner.invoke(main, ["state", "stats", "--config", config])
    assert stats.exit_code == 0 and ": 10 customers;" in stats.output
    forget = runner.invoke(main, ["state", "forget", mobile(3), mobile(4), "--config", config])
    assert forget.output.strip() == "forgot 2 customers"
    before = len(customer_puts(server))
    assert _run(str(source), "--config", config, "--only-changed", "--restart")["requests"] == 2
    assert {r.query["identifierValue"] for r in customer_puts(server)[before:]} == {mobile(3), mobile(4)}
    everything = runner.invoke(main, ["state", "forget", "--all", "--config", config])
    assert everything.output.strip() == "forgot 10 customers"
    neither = runner.invoke(main, ["state", "forget", "--config", config])
    assert neither.exit_code == 2 and "pass --all" in neither.output


def test_the_state_is_per_api_host(tmp_path, sandbox_server):
    one, two = sandbox_server(), sandbox_server()
    source = write_csv(tmp_path / "export.csv", HEADER, _rows(5))
    config_one = str(write_config(tmp_path, one.url))
    _run(str(source), "--config", config_one)
    (tmp_path / "two").mkdir()
    config_two = write_config(tmp_path / "two", two.url, output={"dir": str(tmp_path / "out")})
    assert _run(str(source), "--config", str(config_two), "--only-changed")["requests"] == 5
