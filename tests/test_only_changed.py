"""--only-changed: send only what changed since the API last acknowledged each customer."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner
from conftest import customer_puts, mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.sandbox import Faults

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


def test_a_stopped_and_resumed_run_remembers_what_its_first_part_sent(tmp_path, sandbox_server):
    """The resumed run prepares every row again (and so forgets each customer until its
    answer): the rows the stopped run settled keep their answers in the state too."""
    server = sandbox_server(customers=1000)
    source = write_csv(tmp_path / "export.csv", HEADER, _rows(600))
    config = str(write_config(tmp_path, server.url, limits={"rate_per_minute": 12_000, "concurrency": 8}))
    stopped = CliRunner().invoke(main, ["run", str(source), "--config", config, "--max-runtime", "1", "--json"])
    assert stopped.exit_code == 4, stopped.output
    assert 0 < json.loads(stopped.stdout)["success"] < 600
    resumed = _run(str(source), "--config", config)
    assert resumed["success"] == 600 and len(customer_puts(server)) == 600
    stats = CliRunner().invoke(main, ["state", "stats", "--config", config])
    assert ": 600 customers" in stats.output, stats.output
    shutil.copy(source, tmp_path / "next-night.csv")
    night = _run(str(tmp_path / "next-night.csv"), "--config", config, "--only-changed")
    assert (night["requests"], night["skipped"]) == (0, 600)


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


# --- The fast path (changes.py): same keys, digests and decisions as the first version ---

import random  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from batch_updater.state.sync_state import LOOKUP_NAMES, ChangeFilter, Fingerprints, SyncState  # noqa: E402


def _fingerprint_config(source="INSTORE", account_id=None, identifier_name="mobile"):
    api = SimpleNamespace(base_url="https://eu.api.example.com/", source=source, account_id=account_id,
                          identifier_name=identifier_name, use_async=False)
    text = repr("InputSettings(delimiter=',')")  # what the pinned values below were salted with
    return SimpleNamespace(api=api, input=SimpleNamespace(shaping_text=lambda: text))


def test_keys_and_digests_are_those_existing_stores_hold():
    # Pinned from the first (pandas DataFrame) implementation: a store written by it must still match.
    names = ["identifierValue", "firstName", "extendedFields.city"]
    columns = [["919800000001", "Ab@Example.COM", "", "919800000001", "ÇA-ñ"],
               ["Asha", "", "Émile", "Asha", "x"],
               ["Mysuru", "Mysuru", "", "Mysuru", "Pune"]]
    fingerprints = Fingerprints(names, _fingerprint_config())
    keys, digests = fingerprints.of(columns)
    assert keys.tolist() == [8189717360728996505, -3578443139360586776, 1557305225672440542,
                             8189717360728996505, -8653225242102916016]
    assert digests.tolist() == [-8134272509531767486, 665983662935208760, 3727896763491568371,
                                -8134272509531767486, -3964124844355827834]
    every = ["source", "accountId", "identifierName", "identifierValue", "firstName"]
    columns = [["instore", "", "WeChat", "INSTORE"], ["", "acc-1", "ACC-1", ""],
               ["", "EMAIL", "mobile", "Mobile"], ["9198", "a@b.CO", "9198", "9198"], ["A", "B", "", "A"]]
    keys, digests = Fingerprints(every, _fingerprint_config(account_id="acc-9", identifier_name="email")).of(columns)
    assert keys.tolist() == [-1521454870157921035, -3529049184643024756, -4848897740093486964,
                             -171280404110681339]
    assert digests.tolist() == [-5089503673543605297, -7128953350770184090, -7793505556547705668,
                                -3698246331288774411]
    assert fingerprints.key_of("mobile", "919800000001") == 8189717360728996505
    assert fingerprints.key_of("EMAIL", "A@b.com", "wechat", "X1") == -7504447360460940721


def _reference_of(fingerprints, names, columns):
    """The first implementation, verbatim in effect: DataFrames and hash_pandas_object."""
    frame = pd.DataFrame(dict(zip(names, columns)), dtype=object)
    digests = pd.util.hash_pandas_object(frame, index=False, hash_key=fingerprints._digest_salt)
    parts = {}
    for name in LOOKUP_NAMES:
        column = frame[name] if name in frame else pd.Series("", index=frame.index, dtype=object)
        if name != "identifierValue":
            column = column.where(column != "", fingerprints._defaults.get(name, ""))
        parts[name] = column.str.upper() if name == "source" else column.str.lower()
    keys = pd.util.hash_pandas_object(pd.DataFrame(parts, dtype=object), index=False,
                                      hash_key=fingerprints._key_salt)
    return keys.to_numpy().view(np.int64), digests.to_numpy().view(np.int64)


def _random_cell(rng: random.Random) -> str:
    return rng.choice(["", "", "a", "A", "Pune", "pUNE", "ß", "İstanbul", "ǅ", "ﬁ", "€1", "919800000001",
                       "x" * 40, "instore", "WeChat", "mobile", "EMAIL", "acc-1", "😀", "\t"])


def test_fingerprints_match_the_first_implementation_on_random_chunks():
    rng = random.Random(8)
    for case in range(60):
        names = rng.sample(list(LOOKUP_NAMES) + ["firstName", "lastName", "extendedFields.city"], rng.randint(1, 6))
        if "identifierValue" not in names and rng.random() < 0.7:
            names.append("identifierValue")
        rows = rng.choice([0, 1, 3, 50, 400])
        columns = [[_random_cell(rng) for _ in range(rows)] for _ in names]
        config = _fingerprint_config(source=rng.choice(["INSTORE", "wechat"]),
                                     account_id=rng.choice([None, "", "Acc-9"]),
                                     identifier_name=rng.choice(["mobile", "EMAIL"]))
        fingerprints = Fingerprints(names, config)
        keys, digests = fingerprints.of(columns)
        want_keys, want_digests = _reference_of(fingerprints, names, columns)
        assert keys.dtype == digests.dtype == np.int64 and keys.shape == digests.shape == (rows,)
        assert keys.tolist() == want_keys.tolist(), (case, names)
        assert digests.tolist() == want_digests.tolist(), (case, names)


def _reference_unchanged(stored: dict, sent: set, keys, digests) -> list[bool]:
    result = []
    for key, digest in zip(keys.tolist(), digests.tolist()):
        result.append(key not in sent and stored.get(key) == digest)
        if not result[-1]:
            sent.add(key)
    return result


def test_unchanged_decides_as_the_row_by_row_rule(tmp_path):
    rng = np.random.default_rng(8)
    customers = rng.integers(-2**63, 2**63 - 1, size=300, dtype=np.int64)
    customers[:2] = [-2**63, 2**63 - 1]      # the ends of the key space are keys too
    acknowledged = rng.integers(0, 3, size=len(customers), dtype=np.int64)
    with SyncState(tmp_path / "state.sqlite3") as state:
        for key, digest in zip(customers[:200].tolist(), acknowledged[:200].tolist()):
            state.remember(key, digest)
        state.flush()
        stored = dict(zip(customers[:200].tolist(), acknowledged[:200].tolist()))
        changes, sent = ChangeFilter(state, only_changed=True), set()
        for size in (0, 1, 7, 500, 500, 2000):
            keys = rng.choice(customers, size=size)      # repeats: later rows of a customer
            digests = rng.integers(0, 3, size=size, dtype=np.int64)
            got = changes.unchanged(keys, digests)
            assert got.dtype == bool and got.tolist() == _reference_unchanged(stored, sent, keys, digests)
        assert not ChangeFilter(state, only_changed=False).unchanged(keys, digests).any()


def test_stored_answers_per_key_in_the_order_given(tmp_path):
    with SyncState(tmp_path / "state.sqlite3") as state:
        for key, digest in ((-2**63, 5), (0, 2**63 - 1), (2**63 - 1, -2**63)):
            state.remember(key, digest)
        state.flush()
        known, digests = state.stored(np.array([2**63 - 1, 7, -2**63, 0, 7], dtype=np.int64))
        assert known.tolist() == [True, False, True, True, False]
        assert digests[known].tolist() == [-2**63, 5, 2**63 - 1]
        known, digests = state.stored(np.array([], dtype=np.int64))
        assert known.shape == digests.shape == (0,)


# --- The store's writes: what is committed when, in which order, from which thread ---

import sqlite3  # noqa: E402
import threading  # noqa: E402

from batch_updater.state import sync_state as changes_module  # noqa: E402


def _committed(path) -> dict[int, int]:
    """What another process would read now (a crash loses nothing committed)."""
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT key, digest FROM synced").fetchall())


def test_the_last_call_per_key_wins_within_a_flush(tmp_path):
    with SyncState(tmp_path / "state.sqlite3") as state:
        state.remember(1, 10)
        state.remember(2, 20)
        state.flush()
        state.forget_later([1, 2, 3])
        state.remember(1, 11)           # after its forget: remembered
        state.record((3, 30))
        state.forget(3)                 # after its remember: forgotten
        state.record((4, -2**63))
        state.record((4, 2**63 - 1))
        state.flush_all()
        assert _committed(state.path) == {1: 11, 4: 2**63 - 1}


def test_a_forget_is_committed_by_the_next_flush_and_a_recorded_remember_may_wait(tmp_path):
    path = tmp_path / "state.sqlite3"
    with SyncState(path) as state:
        state.remember(1, 10)
        state.remember(2, 20)
        state.flush()
        assert _committed(path) == {1: 10, 2: 20}     # remember() is not kept waiting
        changes = ChangeFilter(state, only_changed=False)
        changes.sending([7, 8], np.array([1, 2]), np.array([11, 21]))
        changes.answered(7, True)                       # 200 before the flush: still forgotten until written
        state.flush()
        assert _committed(path) == {}                  # both forgets durable, the remember waits
        changes.answered(8, False)
        changes.answered(9, True)                       # a row never sent: nothing
        state.flush()
        assert _committed(path) == {}
    assert _committed(path) == {1: 11}                 # close writes what waited


def test_waiting_remembers_are_written_after_so_many_keys_or_seconds(tmp_path, monkeypatch):
    path = tmp_path / "state.sqlite3"
    monkeypatch.setattr(changes_module, "REMEMBER_KEYS", 4)   # keys waiting, forgotten ones included
    with SyncState(path) as state:
        state.forget_later([1, 2, 3])
        state.record((1, 10))
        state.record((2, 20))
        state.flush()
        assert _committed(path) == {}
        state.forget_later([4])
        state.record((4, 40))
        state.flush()                                  # 4 keys wait: written (3 is still forgotten)
        assert _committed(path) == {1: 10, 2: 20, 4: 40}
        monkeypatch.setattr(changes_module, "REMEMBER_SECONDS", 0.0)
        state.forget_later([5])
        state.record((5, 50))
        state.flush()
        assert _committed(path) == {1: 10, 2: 20, 4: 40, 5: 50}


def test_a_forget_after_a_waiting_remember_wins_and_forget_keys_comes_after_what_was_recorded(tmp_path):
    path = tmp_path / "state.sqlite3"
    with SyncState(path) as state:
        state.forget_later([1, 2])
        state.record((1, 10))
        state.record((2, 20))
        state.flush()
        state.forget(1)                                # the waiting remember of 1 is never written
        state.flush()
        assert state.forget_keys([2]) == 1             # 2's waiting remember went first, then the forget
        assert _committed(path) == {}
    assert _committed(path) == {}


def test_every_flush_leaves_a_safe_store_and_close_the_exact_one(tmp_path, monkeypatch):
    """A run's calls, at random: chunks of rows go out (customers repeat), a customer's rows
    are answered in order (the pool sends one at a time), flushes come in between. After
    any flush a customer with a row on its way, or whose last answer was not a 200, is not
    in the store, and any other holds its last acknowledged digest or nothing; after
    flush_all() it holds exactly that."""
    rng = random.Random(20261128)
    path = tmp_path / "state.sqlite3"
    monkeypatch.setattr(changes_module, "REMEMBER_KEYS", 9)
    unanswered: dict[int, list[tuple[int, int]]] = {}   # key -> its (row, digest) on their way, in order
    acknowledged: dict[int, int | None] = {}
    row = 2
    with SyncState(path) as state:
        changes = ChangeFilter(state, only_changed=False)
        for step in range(4000):
            choice = rng.random()
            if choice < 0.15:
                keys = [rng.randrange(30) for _ in range(rng.randint(1, 6))]
                digests = [rng.randrange(-2**63, 2**63) for _ in keys]
                rows = list(range(row, row + len(keys)))
                row += len(keys)
                changes.sending(rows, np.array(keys, dtype=np.int64), np.array(digests, dtype=np.int64))
                for sent_row, key, digest in zip(rows, keys, digests):
                    unanswered.setdefault(key, []).append((sent_row, digest))
            elif choice < 0.7 and unanswered:
                key = rng.choice(sorted(unanswered))
                answered_row, digest = unanswered[key].pop(0)
                if not unanswered[key]:
                    del unanswered[key]
                applied = rng.random() < 0.8
                changes.answered(answered_row, applied)
                acknowledged[key] = digest if applied else None
            else:
                everything = choice > 0.97
                state.flush_all() if everything else state.flush()
                committed = _committed(path)
                for key in set(committed) | set(acknowledged) | set(unanswered):
                    safe = None if key in unanswered else acknowledged.get(key)
                    assert committed.get(key) in ((safe,) if everything else (None, safe)), (step, key)
    assert _committed(path) == {k: d for k, d in acknowledged.items() if d is not None and k not in unanswered}


def test_calls_from_the_preparing_thread_and_the_loop_while_another_thread_flushes(tmp_path):
    """forget_later from one thread, settled answers from another, flushes from a third:
    no call is lost, and each customer ends as its last call says."""
    path = tmp_path / "state.sqlite3"
    chunks = [list(range(first, first + 500)) for first in range(0, 20_000, 500)]
    handed_over: list[list[int]] = []
    prepared = threading.Semaphore(0)
    done = threading.Event()
    with SyncState(path) as state:
        changes = ChangeFilter(state, only_changed=False)

        def prepare() -> None:
            for chunk in chunks:
                keys = np.array(chunk, dtype=np.int64) * 7919
                changes.sending(chunk, keys, keys + 1)
                handed_over.append(chunk)
                prepared.release()

        def answer_rows() -> None:
            for index in range(len(chunks)):
                prepared.acquire()
                for row in handed_over[index]:
                    changes.answered(row, row % 10 != 3)
            done.set()

        def flush() -> None:
            while not done.is_set():
                state.flush()

        threads = [threading.Thread(target=target) for target in (prepare, answer_rows, flush)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    every = [row for chunk in chunks for row in chunk]
    assert _committed(path) == {row * 7919: row * 7919 + 1 for row in every if row % 10 != 3}
