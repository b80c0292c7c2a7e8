"""What a run leaves beside its reports, through the CLI: report.html in every run folder
(and `batch-updater report`, and merged shards), Prometheus metrics with --metrics-file
(also for a run that fails before sending), and nothing of it slowing `--help`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from conftest import mobile, write_config, write_csv
from prometheus_client.parser import text_string_to_metric_families

from batch_updater.cli import main


def _metrics(path: Path) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(path.read_text()) for sample in family.samples}


def test_every_run_folder_gets_report_html_and_report_rebuilds_it(tmp_path, sandbox_server):
    config = write_config(tmp_path, sandbox_server().url)
    source = write_csv(tmp_path / "night.csv", ["identifierValue"], [[mobile(1)], ["12"]])
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json"])
    folder = Path(json.loads(result.stdout)["reports"]["summary"]).parent
    page = folder / "report.html"
    assert page.is_file() and "<svg" in page.read_text()
    page.unlink()
    rebuilt = CliRunner().invoke(main, ["report", str(folder.parent)])  # the job folder: its latest run
    assert rebuilt.exit_code == 0 and Path(rebuilt.stdout.strip()) == page and page.is_file()
    dry = CliRunner().invoke(main, ["validate", str(source), "--config", str(config), "--json"])
    assert (Path(json.loads(dry.stdout)["reports"]["summary"]).parent / "report.html").is_file()
    missing = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert missing.exit_code == 2 and missing.stderr.startswith("batch-updater: error: ")


def test_merged_shards_get_a_report_too(tmp_path, sandbox_server):
    config = write_config(tmp_path, sandbox_server().url)
    source = write_csv(tmp_path / "big.csv", ["identifierValue"], [[mobile(i)] for i in range(20)])
    folders = []
    for k in (1, 2):
        result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--shard", f"{k}/2", "--json"])
        folders.append(str(Path(json.loads(result.stdout)["reports"]["summary"]).parent))
    merged = CliRunner().invoke(main, ["merge", *folders, "--output-dir", str(tmp_path / "merged")])
    assert merged.exit_code == 0, merged.output
    assert (tmp_path / "merged" / "report.html").is_file()


def test_metrics_file_says_how_the_night_went_and_keeps_the_last_success(tmp_path, sandbox_server):
    config = write_config(tmp_path, sandbox_server().url)
    metrics = tmp_path / "metrics" / "batch_updater.prom"
    metrics.parent.mkdir()
    source = write_csv(tmp_path / "nightly.csv", ["identifierValue"], [[mobile(1)], [mobile(2)], ["12"]])
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--metrics-file", str(metrics)])
    assert result.exit_code == 1
    first = _metrics(metrics)
    job = (("job", "nightly"),)
    assert first[("batch_updater_exit_code", job)] == 1
    assert first[("batch_updater_rows", (("job", "nightly"), ("outcome", "updated")))] == 2
    assert first[("batch_updater_rows", (("job", "nightly"), ("outcome", "error")))] == 1
    succeeded = first[("batch_updater_last_success_timestamp_seconds", job)]

    # A broken export the next night: exit 2 before sending; the last success stays.
    broken = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--metrics-file", str(metrics),
                                       "--min-rows", "100", "--restart"])
    assert broken.exit_code == 2
    second = _metrics(metrics)
    assert second[("batch_updater_exit_code", job)] == 2
    assert second[("batch_updater_last_success_timestamp_seconds", job)] == succeeded

    named = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--metrics-file", str(metrics),
                                      "--job-name", "loyalty-sync"])
    assert named.exit_code == 1  # the finished job replays: the nightly run did run
    assert _metrics(metrics)[("batch_updater_exit_code", (("job", "loyalty-sync"),))] == 1


def test_help_imports_neither_the_plotting_nor_the_metrics_library():
    code = ("import sys; from batch_updater.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('matplotlib', 'prometheus_client', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
