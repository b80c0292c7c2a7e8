"""Shards: every row in one shard, one customer's rows together, merged reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import customer_puts, mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.input.shards import Shard
from batch_updater.rows.payload import customer_key


def test_shards_partition_every_row_once_and_keep_customers_together():
    keys = [customer_key("mobile", mobile(i)) for i in range(3000)]
    for count in (1, 2, 3, 8):
        owners = [[k for k in range(1, count + 1) if Shard(k, count).owns(key)] for key in keys]
        assert all(len(o) == 1 for o in owners)
        sizes = [sum(o == [k] for o in owners) for k in range(1, count + 1)]
        assert min(sizes) > 0.7 * len(keys) / count
    assert Shard.parse("2/8") == Shard(2, 8)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(Exception, match="--shard"):
            Shard.parse(bad)


def test_sharded_runs_merge_into_one_complete_report(tmp_path, sandbox_server):
    server = sandbox_server()
    rows = []
    for i in range(120):
        written = mobile(i % 40) if i % 10 else "+91 " + mobile(i % 40)[2:]  # 12 written with a +91 prefix
        rows.append([written, f"Name{i}"])   # three rows per customer
    rows.append(["919700000000", "Ghost"])
    rows.append(["12", "Invalid"])
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], rows)
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 60_000}, input={"default_country": "IN"})
    runner = CliRunner()
    folders = []
    for k in (1, 2, 3):
        result = runner.invoke(main, ["run", str(source), "--config", str(config), "--shard", f"{k}/3", "--json"])
        assert result.exit_code in (0, 1), (result.output, result.exc_info)
        summary = json.loads(result.stdout)
        assert summary["shard"] == f"{k}/3" and summary["rate_limit_per_minute"] == 20_000
        folders.append(str(Path(summary["reports"]["summary"]).parent))
    per_customer_shard = {}
    for request in customer_puts(server):
        per_customer_shard.setdefault(request.query["identifierValue"], set()).add(request.started)
    assert len(customer_puts(server)) == 121  # every valid row sent once, across the shards

    merged_dir = tmp_path / "merged"
    result = runner.invoke(main, ["merge", *folders, "--output-dir", str(merged_dir), "--json"])
    assert result.exit_code == 1, result.output
    merged = json.loads(result.stdout)
    assert (merged["rows"], merged["success"], merged["errors"]) == (122, 120, 2)
    assert merged["normalised"] == {"identifierValue": 12}  # the shards' rewrite counts, summed
    rows_seen = [int(r["_row"]) for name in ("success", "errors", "skipped")
                 for r in read_report(merged_dir / f"{name}.csv")]
    assert sorted(rows_seen) == list(range(2, 124))
    success_rows = [int(r["_row"]) for r in read_report(merged_dir / "success.csv")]
    assert success_rows == sorted(success_rows)

    missing = runner.invoke(main, ["merge", *folders[:2], "--output-dir", str(tmp_path / "m2")])
    assert missing.exit_code == 2 and "pass exactly one run of every shard" in missing.output


def test_one_customers_rows_stay_in_file_order_within_a_shard(tmp_path, sandbox_server):
    server = sandbox_server(processing_seconds=0.01)
    rows = [[mobile(i % 5), f"Name{i}"] for i in range(40)]
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], rows)
    config = write_config(tmp_path, server.url)
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--shard", "1/2"])
    assert result.exit_code == 0, result.output
    for i in range(5):
        names = [r.body["profiles"][0]["firstName"] for r in customer_puts(server)
                 if r.query["identifierValue"] == mobile(i)]
        assert names in ([], [f"Name{j}" for j in range(i, 40, 5)])
    assert all(r.status == 200 for r in customer_puts(server))
