"""send/timeline.py: a run's requests minute by minute (what report.html charts), on a fake clock."""

from __future__ import annotations

import orjson

from batch_updater.send.timeline import Timeline
from batch_updater.state.journal import MINUTE_COLUMNS, Journal


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_minutes_count_statuses_and_reduce_answer_times_to_percentiles(tmp_path):
    clock = Clock(6_000.0)  # minute 6000 (100 minutes after the epoch); the wall clock is the same
    timeline = Timeline(clock, wall=clock)
    for i in range(1, 101):  # 1 ms .. 100 ms
        timeline.request(clock.now, 200, i / 1000)
    timeline.request(clock.now, 429, 0.002)
    timeline.request(clock.now, 503, 0.003, add=True)
    timeline.request(clock.now, None, None)  # dropped: no answer
    timeline.retry()
    assert timeline.take() == []  # the minute is not over yet
    clock.now = 6_061.0
    timeline.request(clock.now, 200, 0.5)
    [row] = timeline.take()
    minute = dict(zip(MINUTE_COLUMNS, row))
    assert (minute["minute"], minute["requests"], minute["adds"], minute["retries"], minute["throttled"],
            minute["server_errors"], minute["network"]) == (6_000, 103, 1, 1, 1, 1, 1)
    assert orjson.loads(minute["statuses"]) == {"200": 100, "429": 1, "503": 1}
    assert (minute["p50_ms"], minute["p95_ms"], minute["max_ms"]) == (50.0, 95.0, 100.0)
    [last] = timeline.take(finished_only=False)
    assert last[0] == 6_060 and timeline.take(finished_only=False) == []

    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.record_minutes("run-1", [row, last])
        assert [(m["run"], m["minute"], m["requests"]) for m in journal.minutes()] == [
            ("run-1", 6_000, 103), ("run-1", 6_060, 1)]


def test_a_minute_taken_whole_is_counted_afresh_after():
    clock = Clock(6_000.0)
    timeline = Timeline(clock, wall=clock)
    timeline.request(clock.now, 200, 0.01)
    [first] = timeline.take(finished_only=False)
    timeline.request(clock.now, 200, 0.01)  # the same minute, after it was taken
    [second] = timeline.take(finished_only=False)
    assert (first[0], first[1], second[0], second[1]) == (6_000, 1, 6_000, 1)
