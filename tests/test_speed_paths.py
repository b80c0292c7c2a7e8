"""The fast paths taken for throughput decide exactly as the paths they shortcut."""

from __future__ import annotations

import asyncio
import random

import pytest
from yarl import URL

from batch_updater.config import load_config
from batch_updater.outcomes import RowOutcome, Status
from batch_updater.rows.payload import Lookup, Payload
from batch_updater.send.client import LOOKUP_PATH, ApiClient, _encoded
from batch_updater.send.ratelimit import RateLimiter
from batch_updater.state import crash_logs
from batch_updater.state.crash_logs import InFlightLog
from batch_updater.state.journal import Journal

# -- the in-flight log ------------------------------------------------------------------------

def _rows(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data) - len(data) % 8, 8)]


def test_in_flight_log_is_on_disk_without_close_across_segments(tmp_path, monkeypatch):
    monkeypatch.setattr(crash_logs, "SEGMENT", 4096)  # 512 rows a segment
    path = tmp_path / "journal.sqlite.inflight"
    log = InFlightLog(path)
    for row in range(2, 1500):
        log.append(row)
    # as a crashed process leaves it: every appended row is in the file, then zeros
    rows = _rows(path.read_bytes())
    assert rows[:1498] == list(range(2, 1500)) and not any(rows[1498:])
    log.close()
    assert _rows(path.read_bytes()) == list(range(2, 1500))  # a clean close trims the zeros
    log = InFlightLog(path)  # appends after what is there
    log.append(7)
    log.close()
    assert _rows(path.read_bytes()) == list(range(2, 1500)) + [7]


def test_journal_turns_a_crashed_log_into_in_flight_rows(tmp_path):
    crashed = Journal(tmp_path / "journal.sqlite")
    for row in (2, 3, 4):
        crashed.mark_in_flight(row)
    crashed.record(RowOutcome(3, Status.SUCCESS))
    crashed.flush()  # no close: the process died here
    journal = Journal(tmp_path / "journal.sqlite")
    assert journal.states(0, 100) == {2: "in_flight", 3: "success", 4: "in_flight"}
    journal.close()
    crashed.close()


# -- the rate limiter's no-wait path ------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


def _state(limiter: RateLimiter) -> tuple:
    return limiter._due, list(limiter._starts)


async def test_try_acquire_decides_and_records_as_acquire_does():
    rng = random.Random(6)
    clock_a, clock_b = Clock(), Clock()
    a = RateLimiter(20, 2.0, burst=3, margin=0.05, clock=clock_a, sleep=clock_a.sleep)
    b = RateLimiter(20, 2.0, burst=3, margin=0.05, clock=clock_b, sleep=clock_b.sleep)
    for _ in range(400):
        step = rng.choice([0.0, 0.01, 0.05, 0.1, 0.3])
        clock_a.now += step
        clock_b.now += step
        if b.try_acquire():  # a start was free: acquire() must start at once, the same way
            before = clock_a.now
            await a.acquire()
            assert clock_a.now == before
        else:  # acquire() must wait; try_acquire changed nothing
            before = _state(b)
            assert not b.try_acquire() and _state(b) == before
            await a.acquire()
            assert clock_a.now > clock_b.now
            await b.acquire()
            assert clock_b.now == clock_a.now
        assert _state(a) == _state(b)


async def test_try_acquire_never_jumps_the_queue():
    clock = Clock()
    limiter = RateLimiter(10, 1.0, clock=clock, sleep=clock.sleep)
    assert limiter.try_acquire()
    waiting = asyncio.ensure_future(limiter.acquire())  # waits for the next slot
    await asyncio.sleep(0)
    clock.now += 5.0  # a slot is free now, but a caller queued for it first
    assert not limiter.try_acquire()
    await waiting
    assert len(limiter._starts) == 2
    assert limiter.try_acquire()  # then a slot was free again (late, so due at once)


async def test_a_huge_limit_keeps_few_start_times_and_decides_the_same():
    clock_a, clock_b = Clock(), Clock()
    pruned = RateLimiter(10**9, 1.0, margin=0.1, clock=clock_a, sleep=clock_a.sleep)
    kept = RateLimiter(10**9, 1.0, margin=0.1, clock=clock_b, sleep=clock_b.sleep)
    kept.PRUNE_AT = 10**12  # never prunes
    for i in range(20_000):
        clock_a.now = clock_b.now = 1000.0 + i * 0.0005  # 2,000 starts a second
        assert pruned.try_acquire() and kept.try_acquire()
        assert pruned._due == kept._due
    assert len(pruned._starts) <= RateLimiter.PRUNE_AT + 1
    assert len(kept._starts) == 20_000
    assert list(pruned._starts) == list(kept._starts)[-len(pruned._starts):]


async def test_a_small_limit_is_still_exact_with_pruning_on():
    clock = Clock()
    limiter = RateLimiter(3, 1.0, burst=3, clock=clock, sleep=clock.sleep)
    limiter.PRUNE_AT = 0  # prune at every start: must not change a decision
    starts = []
    for _ in range(30):
        await limiter.acquire()
        starts.append(clock.now)
    assert all(starts[i + 3] - starts[i] >= 1.0 - 1e-9 for i in range(len(starts) - 3))


# -- the lookup URL -----------------------------------------------------------------------------

@pytest.mark.parametrize("base", ["http://127.0.0.1:8080", "https://eu.api.capillarytech.com/",
                                  "http://[::1]:9000/prefix", "http://h.example:81/a%20b/"])
@pytest.mark.parametrize("use_async", [False, True])
def test_url_from_parts_is_the_url_of_the_query(base, use_async):
    config = load_config(None, overrides={"api.base_url": base, "api.username": "u", "api.use_async": use_async},
                         environ={"BATCH_UPDATER_PASSWORD": "p"})
    client = ApiClient(session=None, api=config.api)
    lookups = [Lookup("INSTORE", "mobile", "919800000001", None), Lookup("WECHAT", "email", "a+b@x.com", "acc 1"),
               Lookup("INSTORE", "externalId", "ÄÖ&=?#/ %", None), Lookup("INSTORE", "mobile", "919800000002", None)]
    for lookup in lookups * 2:  # the second time from the cache
        query = "&".join(f"{name}={_encoded(value)}" for name, value in lookup.query(use_async).items())
        expected = URL(f"{base.rstrip('/')}{LOOKUP_PATH}?{query}", encoded=True)
        got = client.url(Payload(2, lookup, {}))
        assert got == expected and str(got) == str(expected)
        assert got.host == expected.host and got.port == expected.port and got.raw_query_string == query


# -- the first chunk in two pieces ---------------------------------------------------------------

def test_first_chunk_in_two_pieces_prepares_the_same_rows(tmp_path, monkeypatch):
    import batch_updater.rows.prepare as prepare
    from batch_updater.input.columns import resolve_headers
    from batch_updater.input.reader import open_input

    path = tmp_path / "customers.csv"
    lines = ["identifierValue,firstName,commChannels.email.value"]
    for i in range(2500):
        email = "bad@" if i % 97 == 0 else f"c{i}@example.com"
        lines.append("," if i % 211 == 0 else f"9198{i:08d},First{i},{email}")
    path.write_text("\n".join(lines) + "\n")
    config = load_config(None, overrides={"api.base_url": "http://127.0.0.1:9", "api.username": "u",
                                          "input.chunk_rows": 2000}, environ={"BATCH_UPDATER_PASSWORD": "p"})

    def prepared(first_piece: int) -> list:
        monkeypatch.setattr(prepare, "FIRST_PIECE_ROWS", first_piece)
        source = open_input(path, config.input)
        plan = resolve_headers(source.headers, dict(config.columns), str(source.path))
        return list(prepare.prepare_chunks(source, plan, config))

    whole, pieces = prepared(10**9), prepared(300)
    assert len(whole) == 2 and len(pieces) == 3
    assert [p for c in pieces for p in c.payloads] == [p for c in whole for p in c.payloads]
    def by_row(chunks): return sorted((o for c in chunks for o in c.outcomes), key=lambda o: o.row)
    assert by_row(pieces) == by_row(whole) and by_row(whole)
    assert pieces[0].payloads[-1].row < pieces[1].payloads[0].row


# -- a worker that fails on a bug halts the pool instead of hanging the submitter ----------------

async def test_a_worker_bug_halts_the_run_instead_of_hanging_it():
    from batch_updater.send.pool import WorkerPool

    class BrokenLimiter:  # no try_acquire: every worker fails on its first row
        def succeeded(self) -> None: ...

    class Client:
        async def send(self, payload, pace=None, add=False):
            pace()
            raise AssertionError("unreachable")

    config = load_config(None, overrides={"api.base_url": "http://127.0.0.1:9", "api.username": "u",
                                          "limits.concurrency": 2}, environ={"BATCH_UPDATER_PASSWORD": "p"})
    pool = WorkerPool(Client(), BrokenLimiter(), config.limits, lambda outcome: None)
    pool.start()

    async def feed() -> None:
        for i in range(100):  # far more than the queue holds
            await pool.submit(Payload(i + 2, Lookup("INSTORE", "mobile", f"9198{i:08d}", None), {}))
        await pool.finish()

    with pytest.raises(AttributeError):
        await asyncio.wait_for(feed(), timeout=5)
    assert pool.abort_reason.startswith("internal error in a worker: AttributeError")


# -- group commits from a writer thread ---------------------------------------------------------

def test_rows_recorded_while_another_thread_commits_are_each_committed_once(tmp_path):
    import threading

    journal = Journal(tmp_path / "journal.sqlite")
    done = threading.Event()

    def commit_often() -> None:
        while not done.is_set():
            journal.flush()

    writer = threading.Thread(target=commit_often)
    writer.start()
    for row in range(2, 60_002):
        journal.record(RowOutcome(row, Status.SUCCESS))
        if row % 1000 == 0:
            journal.record_skipped([(100_000 + row, 100_000 + row + 5)], "same")
        if row % 100 == 0:  # the loop's own commits and reads meet the writer's
            journal.flush() if row % 200 else journal.states(row - 100, row)
    done.set()
    writer.join()
    journal.flush()
    states = journal.states(0, 200_000)
    assert sum(1 for state in states.values() if state == "success") == 60_000
    assert sum(1 for state in states.values() if state == "skipped") == 60 * 6
    journal.close()


def test_the_ack_log_reads_back_whole_records_across_segments_and_stops_at_a_torn_one(tmp_path, monkeypatch):
    monkeypatch.setattr(crash_logs, "SEGMENT", 4096)
    path = tmp_path / "acks"
    log = crash_logs.AckLog(path)
    records = [(row, "success", None, "", "m" * (row % 300), 200) for row in range(2, 400)]
    for values in records:
        log.append(values)
    at = log._used - log._base
    log._map[at + 4:at + 10] = b"[9999,"  # torn: its length never stored
    # as a crashed process leaves it: no close
    read = [row for batch in crash_logs.read_ack_log(path, 6, batch_rows=50) for row in batch]
    assert read == [tuple(values) for values in records]
    log.close()
