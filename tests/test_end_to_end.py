"""The whole path, file to reports, over real HTTP against the sandbox."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from click.testing import CliRunner
from conftest import config_for, customer_puts, mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.runner import run
from batch_updater.sandbox import basic_auth_header

ALL_FAMILIES_HEADER = [
    "identifierValue", "identifierName", "source", "loyaltyType", "firstName", "lastName",
    "fields.preferred_language", "extendedFields.city", "extendedFields.gender",
    "commChannels.email.value", "commChannels.email.primary", "commChannels.email.verified",
    "commChannels.email.meta.residence", "commChannels.mobilePush.value",
    "commChannels.mobilePush.lastViewedDate", "identifiers.externalId",
    "loyaltyProgramEnrollments.programId", "loyaltyProgramEnrollments.tierNumber",
    "loyaltyProgramEnrollments.loyaltyPoints", "loyaltyProgramEnrollments.tierExpiryDate",
    "loyaltyProgramEnrollments.pointsExpiryDate",
]
ALL_FAMILIES_ROW = [
    mobile(7), "mobile", "WEBSITE", "loyalty", "Asha", "Rao", "kn", "Mysuru", "Female",
    "asha@example.com", "TRUE", "no", "true", "fcm-token-0123456789abcdef", "2026-11-20",
    "EXT00000007", "699", "2", "150", "2027-12-31T23:59:59+05:30", "2027-06-30T23:59:59+05:30",
]


def test_every_column_family_reaches_the_api_as_documented(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ALL_FAMILIES_HEADER, [ALL_FAMILIES_ROW])
    summary = run(config_for(tmp_path, server.url), source)

    assert (summary.exit_code, summary.success) == (0, 1)
    [request] = customer_puts(server)
    assert request.path == "/v2/customers/lookup"
    assert request.query == {"source": "WEBSITE", "identifierName": "mobile", "identifierValue": mobile(7)}
    assert request.headers["Authorization"] == basic_auth_header("demo.till", "demo-password")
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {
        "loyaltyInfo": {"loyaltyType": "loyalty"},
        "profiles": [{
            "firstName": "Asha", "lastName": "Rao",
            "fields": {"preferred_language": "kn"},
            "identifiers": [{"type": "externalId", "value": "EXT00000007"}],
            "commChannels": [
                {"type": "email", "value": "asha@example.com", "primary": True, "verified": False,
                 "meta": {"residence": "true"}},
                {"type": "mobilePush", "value": "fcm-token-0123456789abcdef",
                 "meta": {"lastViewedDate": "2026-11-20"}},
            ],
        }],
        "extendedFields": {"city": "Mysuru", "gender": "Female"},
        "loyaltyProgramEnrollments": [{
            "programId": 699, "tierNumber": 2, "loyaltyPoints": 150,
            "tierExpiryDate": "2027-12-31T23:59:59+05:30",
            "pointsExpiryDate": "2027-06-30T23:59:59+05:30",
        }],
    }
    [success] = read_report(summary.reports["success"])
    assert success["_row"] == "2" and success["_customer_id"] == "100007"
    assert success["_http_status"] == "200" and success["_attempts"] == "1"


def test_empty_cells_are_left_out_and_queries_are_url_encoded(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName", "lastName", "extendedFields.city"],
                       [["customer3@example.com", "", "Rao", ""]])
    config = config_for(tmp_path, server.url, api={"identifier_name": "email"})
    summary = run(config, source)

    assert summary.exit_code == 0
    [request] = customer_puts(server)
    assert request.body == {"profiles": [{"lastName": "Rao"}]}
    assert request.query["identifierValue"] == "customer3@example.com"
    assert server.state.customer(100003)["lastName"] == "Rao"


def _thousand_rows(path: Path) -> tuple[Path, set[int]]:
    """1,000 rows of which 50 are refused by the API: 30 unknown customers, 20 loyalty→non_loyalty."""
    rows, refused = [], set()
    for i in range(1000):
        row_number = i + 2
        if i % 20 == 0 and i % 40 == 0:
            rows.append([f"9197{i:08d}", f"Nobody{i}", ""])          # not a seeded customer: 8015
            refused.add(row_number)
        elif i % 20 == 0:
            rows.append([mobile(i), f"Name{i}", "non_loyalty"])     # 1046
            refused.add(row_number)
        else:
            rows.append([mobile(i), f"Name{i}", "loyalty"])
    return write_csv(path, ["identifierValue", "firstName", "loyaltyType"], rows), refused


def test_thousand_rows_with_api_rejections_put_every_row_in_exactly_one_report(tmp_path, sandbox_server):
    server = sandbox_server()
    source, refused = _thousand_rows(tmp_path / "in.csv")
    summary = run(config_for(tmp_path, server.url, limits={"concurrency": 16}), source)

    assert summary.exit_code == 1
    assert (summary.rows, summary.success, summary.errors, summary.api_errors) == (1000, 950, 50, 50)
    success_rows = [int(r["_row"]) for r in read_report(summary.reports["success"])]
    errors = read_report(summary.reports["errors"])
    error_rows = [int(r["_row"]) for r in errors]
    assert sorted(success_rows + error_rows) == list(range(2, 1002))
    assert set(error_rows) == refused
    assert Counter(r["_code"] for r in errors) == {"8015": 25, "1046": 25}
    assert all(r["_stage"] == "api" and r["_http_status"] == "400" for r in errors)
    # The server saw each row once, and applied exactly the successful ones.
    puts = customer_puts(server)
    assert len(puts) == 1000
    assert len({r.query["identifierValue"] for r in puts}) == 1000
    assert sum(r.applied for r in puts) == 950


def test_an_all_good_run_exits_zero_and_writes_the_summary(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"],
                       [[mobile(i), f"N{i}"] for i in range(50)])
    summary = run(config_for(tmp_path, server.url), source)

    assert (summary.exit_code, summary.status, summary.success) == (0, "completed", 50)
    written = json.loads(Path(summary.reports["summary"]).read_text())
    assert written["exit_code"] == 0 and written["success"] == 50 and written["requests"] == 50
    assert "demo-password" not in Path(summary.reports["summary"]).read_text()
    assert read_report(summary.reports["errors"]) == []


def test_business_errors_are_recognised_whatever_http_status_carries_them(tmp_path, sandbox_server):
    for status in (200, 404):
        server = sandbox_server(business_error_status=status)
        source = write_csv(tmp_path / f"in{status}.csv", ["identifierValue"], [[mobile(1)], ["919700000000"]])
        summary = run(config_for(tmp_path, server.url), source)
        [error] = read_report(summary.reports["errors"])
        assert (error["_row"], error["_code"], error["_http_status"]) == ("3", "8015", str(status))
        assert summary.success == 1 and summary.exit_code == 1


def test_oauth_run_sends_the_token_header(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(5)])
    config = config_for(tmp_path, server.url, password="demo-secret",
                        api={"auth": "oauth", "username": "demo-key"})
    summary = run(config, source)

    assert summary.exit_code == 0
    puts = customer_puts(server)
    assert all(r.headers.get("X-CAP-API-OAUTH-TOKEN") for r in puts)
    assert all("Authorization" not in r.headers for r in puts)


def test_wrong_password_aborts_after_a_handful_of_requests(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(500)])
    config = write_config(tmp_path, server.url, password="Wr0ng-Secret!", limits={"concurrency": 4})
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config)])

    assert result.exit_code == 3, result.output
    assert "the API refused the credentials 3 times in a row (HTTP 401" in result.output
    assert "check [api] username and the password" in result.output
    assert len(customer_puts(server)) <= 8
    summary = json.loads(Path(_summary_path(result.output)).read_text())
    errors, skipped = read_report(summary["reports"]["errors"]), read_report(summary["reports"]["skipped"])
    assert len(errors) + len(skipped) == 500 and len(errors) <= 8
    assert all(r["_reason"] == "not_sent" for r in skipped)
    assert "Wr0ng-Secret!" not in result.output


def test_cli_dry_run_sends_nothing_and_previews_payloads(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], [[mobile(1), "A"], ["12", "B"]])
    config = write_config(tmp_path, server.url)
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--dry-run", "--json"])

    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["validation_errors"], summary["skipped"]) == ("dry_run", 1, 1)
    assert customer_puts(server) == []
    preview = [json.loads(line) for line in Path(summary["reports"]["preview"]).read_text().splitlines()]
    assert preview == [{"row": 2, "query": {"source": "INSTORE", "identifierName": "mobile",
                                            "identifierValue": mobile(1)},
                        "body": {"profiles": [{"firstName": "A"}]}}]


def test_environment_and_options_override_the_file(tmp_path, sandbox_server, monkeypatch):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    config = write_config(tmp_path, "http://127.0.0.1:9", password=None, api={"source": "JD"})
    monkeypatch.setenv("BATCH_UPDATER_API_BASE_URL", server.url)
    monkeypatch.setenv("BATCH_UPDATER_PASSWORD", "demo-password")
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--source", "WEBSITE"])

    assert result.exit_code == 0, result.output
    assert customer_puts(server)[0].query["source"] == "WEBSITE"


def test_errors_report_can_be_fed_back_unchanged(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["Identifier Value", "firstName"],
                       [[mobile(1), "A"], ["919700000000", "B"]])
    config = config_for(tmp_path, server.url, columns={"identifier value": "identifierValue"})
    first = run(config, source)
    again = run(config, first.reports["errors"])

    assert (again.rows, again.errors) == (1, 1)
    [error] = read_report(again.reports["errors"])
    assert error["Identifier Value"] == "919700000000" and error["_row"] == "2"
    assert list(error)[:2] == ["Identifier Value", "firstName"]


def _summary_path(output: str) -> str:
    return next(line.split(": ", 1)[1] for line in output.splitlines() if line.startswith("summary: "))
