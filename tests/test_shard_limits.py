"""One rule divides the API key's limits over shards, for the CLI and the Airflow operator:
shard K of N gets its share (the shares add up to the key's limit), unless a limit is given
for the shard itself. Four operator tasks run in parallel against a strict sandbox: no
window holds more than the key's limit, no 429, and the limit is used while all have work."""

from __future__ import annotations

import json
import sys
import threading
import types

import pytest
from conftest import PASSWORD, max_in_window, mobile, write_config, write_csv

from batch_updater.config import load_config
from batch_updater.input.shards import ADD_LIMIT, UPDATE_LIMIT, Shard, shard_limits
from batch_updater.rows.payload import customer_key
from batch_updater.sandbox import RateLimit, SandboxSettings


@pytest.mark.parametrize("limit", [1, 3, 50, 101, 600, 1000])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_the_shares_add_up_to_the_keys_limit(limit, count):
    shares = [Shard(k, count).share(limit) for k in range(1, count + 1)]
    assert sum(shares) == max(limit, count)  # at least 1 each: a key below N is shared as 1s
    assert max(shares) - min(shares) <= 1


def test_a_limit_given_for_the_shard_is_kept(tmp_path):
    config = load_config(write_config(tmp_path, "http://127.0.0.1:1", api={"mode": "upsert"},
                                      limits={"rate_per_minute": 50},
                                      **{"limits.create": {"rate_per_minute": 100}}), environ={})
    shared = shard_limits(config, Shard(2, 4))
    assert (shared.limits.rate_per_minute, shared.create_limits.rate_per_minute) == (13, 25)
    own = shard_limits(config, Shard(2, 4), [UPDATE_LIMIT])
    assert (own.limits.rate_per_minute, own.create_limits.rate_per_minute) == (50, 25)
    assert shard_limits(config, Shard(1, 4), [UPDATE_LIMIT, ADD_LIMIT]) == config
    assert shard_limits(config, None) == config


@pytest.fixture
def fake_airflow(monkeypatch):
    """The few Airflow names the operator uses, so its execute() runs here (the real
    Airflow run is samples/check_airflow_dag.sh)."""
    connections: dict[str, types.SimpleNamespace] = {}

    class BaseOperator:
        def __init__(self, **kwargs):
            self.task_id = kwargs.get("task_id")

    class BaseHook:
        @staticmethod
        def get_connection(conn_id):
            return connections[conn_id]

    sdk = types.ModuleType("airflow.sdk")
    sdk.BaseOperator, sdk.BaseHook = BaseOperator, BaseHook  # type: ignore[attr-defined]
    exceptions = types.ModuleType("airflow.exceptions")
    exceptions.AirflowException = type("AirflowException", (Exception,), {})  # type: ignore[attr-defined]
    airflow = types.ModuleType("airflow")
    for name, module in (("airflow", airflow), ("airflow.sdk", sdk), ("airflow.exceptions", exceptions)):
        monkeypatch.setitem(sys.modules, name, module)
    import batch_updater.integrations.airflow as integration

    monkeypatch.delitem(integration.__dict__, "BatchUpdaterOperator", raising=False)
    yield connections, integration.BatchUpdaterOperator
    integration.__dict__.pop("BatchUpdaterOperator", None)


def test_four_operator_shards_in_parallel_keep_the_keys_limit(tmp_path, sandbox_server, fake_airflow):
    connections, operator = fake_airflow
    window, key_limit, rows = 2.0, 20, 160
    server = sandbox_server(rate_limit=RateLimit(key_limit, window))
    connections["capillary"] = types.SimpleNamespace(
        host=server.url, login=SandboxSettings().till_code, password=PASSWORD,
        extra_dejson={"source": "INSTORE", "rate_per_minute": key_limit})
    config = tmp_path / "limits.toml"
    config.write_text(f"[limits]\nwindow_seconds = {window}\nwindow_margin_seconds = 0.05\n")
    source = write_csv(tmp_path / "customers.csv", ["identifierValue"], [[mobile(i)] for i in range(rows)])
    summaries: dict[int, dict] = {}

    def execute(k: int) -> None:
        task = operator(task_id=f"shard{k}", input_path=str(source), conn_id="capillary",
                        config_path=str(config), shard=f"{k}/4", output_dir=str(tmp_path / "out"))
        summaries[k] = task.execute({"ti": None})

    threads = [threading.Thread(target=execute, args=(k,)) for k in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(summaries) == [1, 2, 3, 4]
    assert sum(s["success"] for s in summaries.values()) == rows
    assert {s["rate_limit_per_minute"] for s in summaries.values()} == {5 * 60 / window}

    puts = [r for r in server.state.requests if r.method == "PUT"]
    assert [r.status for r in puts].count(429) == 0 and len(puts) == rows
    starts = sorted(r.started for r in puts)
    assert max_in_window(starts, window) <= key_limit
    def shard_of(request) -> int:
        key = customer_key("mobile", request.query["identifierValue"])
        return next(k for k in range(1, 5) if Shard(k, 4).owns(key))

    by_shard = {k: sorted(r.started for r in puts if shard_of(r) == k) for k in range(1, 5)}
    busy_from, busy_to = max(s[0] for s in by_shard.values()), min(s[-1] for s in by_shard.values())
    during = [t for t in starts if busy_from <= t <= busy_to]
    assert busy_to - busy_from > 2 * window  # long enough to measure
    assert (len(during) - 1) / (busy_to - busy_from) >= 0.9 * key_limit / window


def test_the_cli_gives_each_shard_its_share(tmp_path, sandbox_server):
    from click.testing import CliRunner

    from batch_updater.cli import main

    server = sandbox_server()
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 50})
    source = write_csv(tmp_path / "c.csv", ["identifierValue"], [[mobile(1)]])
    limits = []
    for k in range(1, 5):
        result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--shard", f"{k}/4", "--json"])
        limits.append(json.loads(result.stdout)["rate_limit_per_minute"])
    assert limits == [13, 13, 12, 12] and sum(limits) == 50
    given = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--shard", "1/4",
                                      "--rate-per-minute", "30", "--json", "--restart"])
    assert json.loads(given.stdout)["rate_limit_per_minute"] == 30
