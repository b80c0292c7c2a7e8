"""report.html (output/html_report.py): built from real runs against the sandbox, then parsed
with the standard library's HTML parser: every chart there, the headline's figures equal to
summary.json's, nothing fetched from the network, identifiers masked, no secret shown."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from conftest import mobile, write_config, write_csv

from batch_updater.cli import main
from batch_updater.errors import InputError
from batch_updater.output.html_report import CHART_IDS, REPORT_NAME, find_run_folder, write_report_html
from batch_updater.output.masking import mask_identifier
from batch_updater.sandbox import Faults, RateLimit, SandboxSettings, SandboxThread

MB = 1024 * 1024
HEADER = ["identifierValue", "firstName", "extendedFields.cty"]  # `cty`: unknown to the org, warning 91015
GHOST = "919912345678"  # no such customer: 8015


class Page(HTMLParser):
    """What the tests look at: figures by data-key, charts, links, and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.figures: dict[str, list[tuple[str, str]]] = {}
        self.charts: dict[str, int] = {}        # figure id -> <svg> elements inside
        self.urls: list[str] = []               # every src and href
        self.tags: set[str] = set()
        self._figure: str | None = None
        self._key: tuple[str, str] | None = None
        self._text: list[str] = []
        self.text_parts: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.add(tag)
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "xlink:href")]
        if tag == "figure":
            self._figure = attributes.get("id")
            self.charts[self._figure or ""] = 0
        if tag == "svg" and self._figure:
            self.charts[self._figure] += 1
        if "data-key" in attributes:
            self._key, self._text = (attributes["data-key"], attributes.get("data-value", "")), []

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        if tag == "b" and self._key:
            key, value = self._key
            self.figures.setdefault(key, []).append((value, "".join(self._text)))
            self._key = None

    def handle_data(self, data):
        self.text_parts.append(data)
        if self._key:
            self._text.append(data)


def _invoke(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.stdout.startswith("{"), (result.output, result.exc_info)
    return result.exit_code, json.loads(result.stdout)


def _rows(count: int = 40) -> list[list[str]]:
    rows = [[mobile(i), f"Name{i}", "Pune"] for i in range(count)]
    return rows + [["55555", "Bad", "x"], [GHOST, "Ghost", "y"], ["asha@example.com", "Email", "z"]]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """One job, two real runs against a sandbox with a small rate limit (429s) and 503s:
    the first, then a rerun with --retry-failed (sends the refused row again)."""
    folder = tmp_path_factory.mktemp("report")
    settings = SandboxSettings(rate_limit=RateLimit(15, 1.0), faults=Faults(error_503=0.1), seed=7)
    with SandboxThread(settings) as server:
        config = write_config(folder, server.url, limits={"rate_per_minute": 6_000, "backoff_base_seconds": 0.05,
                                                          "max_attempts": 4})
        source = write_csv(folder / "nightly.csv", HEADER, _rows())
        first = _invoke("run", str(source), "--config", str(config))
        second = _invoke("run", str(source), "--config", str(config), "--retry-failed")
    return {"folder": folder, "config": config, "source": source, "runs": [first[1], second[1]]}


def _run_folder(summary: dict) -> Path:
    return Path(summary["reports"]["summary"]).parent


def _build(folder: Path) -> tuple[Path, str, Page]:
    path = write_report_html(folder)
    text = path.read_text(encoding="utf-8")
    return path, text, Page(text)


def test_the_report_has_every_chart_and_the_headline_figures_of_summary_json(job):
    summary = job["runs"][0]
    assert summary["throttled"] and summary["retries"] and summary["errors"] == 3  # the run we meant
    path, _, page = _build(_run_folder(summary))
    assert path == _run_folder(summary) / REPORT_NAME
    assert {chart: page.charts.get(chart) for chart in CHART_IDS} == dict.fromkeys(CHART_IDS, 1)
    shown = {"status", "exit_code", "rows", "updated", "errors", "validation_errors", "api_errors",
             "network_errors", "skipped", "not_sent", "in_doubt", "duration_seconds", "achieved_rate_per_minute",
             "rate_limit_per_minute", "requests", "retries", "throttled", "updated_with_warnings", "to_send_again"}
    assert shown <= set(page.figures)
    for key, figures in page.figures.items():
        for value, text in figures:
            assert value == str(summary[key]), key
            if isinstance(summary[key], int):
                assert text == f"{summary[key]:,}", key
    assert page.figures["duration_seconds"][0][1].endswith(" s")


def test_the_report_is_one_self_contained_file_under_a_megabyte(job):
    path, text, page = _build(_run_folder(job["runs"][-1]))
    assert path.stat().st_size < MB
    assert not {"script", "link", "img", "iframe", "object", "embed"} & page.tags
    for url in page.urls:
        assert not re.match(r"^\s*(https?:)?//", url, re.IGNORECASE), url
        assert not url.startswith(("javascript:", "data:")), url
    assert all(inside.startswith("#") for inside in re.findall(r"url\(\s*['\"]?([^)'\"]*)", text))
    assert "@import" not in text and "http://" not in text.replace(job["runs"][-1]["config"]["api"]["base_url"], "")
    assert "errors.csv" in page.urls and (path.parent / "errors.csv").is_file()  # relative, next to the page
    assert path.stat().st_mode & 0o077 == 0  # it names customers, masked: owner only, like the reports


def test_error_groups_show_example_rows_with_identifiers_masked(job):
    summary = job["runs"][-1]
    _, text, page = _build(_run_folder(summary))
    words = " ".join(page.text_parts)
    for group in summary["top_errors"]:
        assert group["message"] in words and f"row {group['example_row']}" in words
    for identifier in (GHOST, "55555", "asha@example.com"):
        assert identifier not in text
    assert mask_identifier(GHOST) in text and "a***@example.com" in text and "55*55" in text
    assert all(mobile(i) not in text for i in range(40))


def test_warnings_and_settings_are_shown_and_secrets_never(job, tmp_path):
    folder = tmp_path / "run-20261204T020000Z"
    shutil.copytree(_run_folder(job["runs"][-1]), folder)
    summary = orjson.loads((folder / "summary.json").read_bytes())
    summary["config"]["api"].update(base_url="https://till:hunter2@eu.api.example.com/v2?token=abc123&x=1",
                                    client_secret="s3cr3t", oauth_token="tok-999")
    summary["config"]["notify"] = {"webhook_url": "https://hooks.example.com/services/T0/B0/XYZSECRET"}
    (folder / "summary.json").write_bytes(orjson.dumps(summary))
    _, text, page = _build(folder)
    for secret in ("hunter2", "abc123", "s3cr3t", "tok-999", "XYZSECRET"):
        assert secret not in text
    words = " ".join(page.text_parts)
    assert "https://***@eu.api.example.com/v2?token=***&x=1" in words
    assert "91015" in words and "limits.rate_per_minute" in words and "6000" in words.replace(",", "")


def test_the_charts_show_every_run_of_the_job_and_the_runs_table_links_them(job):
    first, second = (_run_folder(s) for s in job["runs"])
    _, _, page = _build(second)
    words = " ".join(page.text_parts)
    assert "run 1" in words and "run 2" in words and "2 runs are drawn one after another" in words
    assert f"../{first.name}/summary.json" in page.urls or f"../{first.name}/report.html" in page.urls


def test_a_job_folder_means_its_latest_run_and_a_folder_without_runs_is_refused(job, tmp_path):
    second = _run_folder(job["runs"][-1])
    assert find_run_folder(second.parent) == second.resolve()
    (second.parent / "latest").unlink()
    assert find_run_folder(second.parent) == second  # the newest run-* folder, without the link
    assert write_report_html(second.parent) == second / REPORT_NAME
    with pytest.raises(InputError, match="no summary.json"):
        write_report_html(tmp_path)


def test_a_dry_run_has_a_report_without_time_charts(job):
    code, summary = _invoke("run", str(job["source"]), "--config", str(job["config"]), "--dry-run")
    assert summary["status"] == "dry_run"
    _, _, page = _build(_run_folder(summary))
    assert page.charts["chart-rate"] == 0 and "a dry run sends nothing" in " ".join(page.text_parts)
    assert page.figures["rows"][0][0] == str(summary["rows"])


def test_merged_shards_chart_their_journals_added_up_or_say_why_not(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    source = write_csv(tmp_path / "big.csv", HEADER, _rows(30))
    shards = [_run_folder(_invoke("run", str(source), "--config", str(config), "--shard", f"{k}/2")[1])
              for k in (1, 2)]
    merged_folder = tmp_path / "merged"
    code, merged = _invoke("merge", *map(str, shards), "--output-dir", str(merged_folder))
    assert code == 1
    _, _, page = _build(merged_folder)
    assert {chart: page.charts[chart] for chart in CHART_IDS} == dict.fromkeys(CHART_IDS, 1)
    for key in ("rows", "errors", "skipped", "not_sent", "requests", "exit_code"):
        assert page.figures[key][0][0] == str(merged[key])
    assert "shard 1/2" in " ".join(page.text_parts)

    for shard in shards:
        shutil.rmtree(shard.parent)
    _, _, page = _build(merged_folder)
    assert page.charts["chart-rate"] == 0 and "not found" in " ".join(page.text_parts)
    assert page.figures["rows"][0][0] == str(merged["rows"])


@pytest.mark.slow  # a benchmark smoke run: the figures are not checked, only that it runs and the size
def test_the_report_benchmark_runs_and_a_1m_row_report_stays_under_a_megabyte(tmp_path):
    script = Path(__file__).resolve().parent.parent / "bench" / "bench_report.py"
    figures = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(script), "--errors", "2000", "--repeat", "1", "--json", str(figures)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    saved = json.loads(figures.read_text())
    assert saved["rows"] == 1_000_000 and saved["minutes"] == 1_700 and 0 < saved["size_bytes"] < MB


def test_an_upsert_run_shows_created_rows_and_the_adds_against_their_own_limit(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url, api={"mode": "upsert"})
    rows = [[mobile(i) if i % 3 else f"9199{i:08d}", f"Name{i}", ""] for i in range(12)]  # a third are new
    code, summary = _invoke("run", str(write_csv(tmp_path / "migration.csv", HEADER, rows)), "--config", str(config))
    assert code == 0 and summary["created"] == 4
    _, text, page = _build(_run_folder(summary))
    for key in ("created", "updated", "create_errors", "add_requests", "achieved_add_rate_per_minute",
                "add_rate_limit_per_minute"):
        assert page.figures[key][0][0] == str(summary[key]), key
    assert f"add limit {summary['add_rate_limit_per_minute']}/min" in text  # the rate chart's second line
