"""Unchanged rows are journaled as runs of rows, not a record each: the journal, the
reports and resume treat a run's rows exactly as single rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from click.testing import CliRunner
from conftest import customer_puts, mobile, read_report, write_config, write_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_updater.cli import main
from batch_updater.input.reader import Chunk
from batch_updater.outcomes import RowOutcome, Status
from batch_updater.output.reports import ReportPaths, write_reports
from batch_updater.state.journal import Journal

UNCHANGED = "unchanged: the API acknowledged the same values before"
HEADER = ["identifierValue", "firstName", "extendedFields.city"]


def _run(*args: str) -> dict:
    result = CliRunner().invoke(main, ["run", *args, "--json"])
    assert result.stdout, result.output
    return json.loads(result.stdout)


# -- the journal ---------------------------------------------------------------------------------

def test_runs_are_final_states_of_their_rows_and_survive_a_reopen(tmp_path):
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.record_skipped([(2, 5), (9, 9)], "same")
        journal.record(RowOutcome(7, Status.SUCCESS))
    with Journal(tmp_path / "journal.sqlite") as journal:
        assert journal.states(0, 100) == {2: "skipped", 3: "skipped", 4: "skipped", 5: "skipped",
                                          7: "success", 9: "skipped"}
        assert journal.states(4, 8) == {4: "skipped", 5: "skipped", 7: "success"}  # a run reaching in
        assert journal.skipped_runs(6, 8) == []
        assert journal.skipped_runs(3, 9) == [(2, 5, "same"), (9, 9, "same")]


def test_a_row_left_in_flight_then_found_unchanged_is_only_in_the_run(tmp_path):
    crashed = Journal(tmp_path / "journal.sqlite")
    for row in (3, 8):
        crashed.mark_in_flight(row)
    crashed.flush()  # the process died here
    with Journal(tmp_path / "journal.sqlite") as journal:
        assert journal.states(0, 10) == {3: "in_flight", 8: "in_flight"}
        journal.record_skipped([(2, 4)], "same")
        journal.flush()
        assert journal.states(0, 10) == {2: "skipped", 3: "skipped", 4: "skipped", 8: "in_flight"}
    crashed.close()


# -- the reports ----------------------------------------------------------------------------------

def _chunk(rows: list[int]) -> Chunk:
    frame = pd.DataFrame({0: [f"id{r}" for r in rows], 1: [f"=cell{r}" for r in rows]}, dtype=object)
    return Chunk(rows[0], frame, rows)


def test_reports_put_run_rows_and_single_rows_in_file_order_once_each(tmp_path):
    rows = [2, 3, 5, 6, 7, 10, 11, 12]  # a shard's rows: the others are another shard's
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.record_skipped([(2, 3), (7, 11)], "same")  # 7..11: rows 7, 10, 11 of this input
        journal.record(RowOutcome(5, Status.SUCCESS, http_status=200, attempts=1, identifier="id5"))
        journal.record(RowOutcome(6, Status.SKIPPED, message="blank row"))
        journal.flush()
        paths = ReportPaths.in_folder(tmp_path)
        counts = write_reports(paths, ["identifierValue", "firstName"], [_chunk(rows[:4]), _chunk(rows[4:])],
                               journal)
    skipped = read_report(paths.skipped)
    assert [(r["_row"], r["_reason"]) for r in skipped] == [
        ("2", "same"), ("3", "same"), ("6", "blank row"), ("7", "same"), ("10", "same"), ("11", "same"),
        ("12", "not_sent")]
    assert skipped[0]["firstName"] == "'=cell2"  # neutralised like every report cell
    assert [r["_row"] for r in read_report(paths.success)] == ["5"]
    assert read_report(paths.errors) == []
    assert (counts.rows, counts.skipped, counts.success, counts.error, counts.not_sent) == (8, 6, 1, 0, 1)


def test_masked_identifiers_in_run_rows(tmp_path):
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.record_skipped([(2, 3)], "same")
        journal.flush()
        paths = ReportPaths.in_folder(tmp_path)
        frame = pd.DataFrame({0: ["919845012345", "a.b@example.com"], 1: ["x", "y"]}, dtype=object)
        write_reports(paths, ["identifierValue", "firstName"], [Chunk(2, frame)], journal, mask=[0])
    assert [(r["identifierValue"], r["firstName"]) for r in read_report(paths.skipped)] == [
        ("9198****2345", "x"), ("a***@example.com", "y")]


# -- whole runs -----------------------------------------------------------------------------------

def test_every_kind_of_row_lands_once_in_file_order_beside_unchanged_runs(tmp_path, sandbox_server):
    server = sandbox_server()
    rows = [[mobile(i), f"Name{i}", "Mysuru"] for i in range(40)]
    source = write_csv(tmp_path / "export.csv", HEADER, rows)
    config = str(write_config(tmp_path, server.url))
    assert _run(str(source), "--config", config)["success"] == 40
    rows[5] = ["", "", ""]                       # blank
    rows[9][0] = "not-a-mobile"                  # invalid
    rows[20][2] = "Pune"                         # changed
    rows.append([mobile(41), "New", "Pune"])     # new
    write_csv(source, HEADER, rows)
    before = len(customer_puts(server))
    summary = _run(str(source), "--config", config, "--only-changed")
    assert sorted(r.query["identifierValue"] for r in customer_puts(server)[before:]) == [mobile(20), mobile(41)]
    reports = {kind: read_report(summary["reports"][kind]) for kind in ("success", "errors", "skipped")}
    assert [r["_row"] for r in reports["success"]] == ["22", "42"]
    assert [r["_row"] for r in reports["errors"]] == ["11"]
    skipped = [(int(r["_row"]), r["_reason"]) for r in reports["skipped"]]
    assert [row for row, _ in skipped] == sorted(set(range(2, 43)) - {11, 22, 42})
    assert dict(skipped)[7] == "blank row" and {reason for row, reason in skipped if row != 7} == {UNCHANGED}
    assert (summary["rows"], summary["skipped"], summary["success"], summary["errors"]) == (41, 38, 2, 1)


def test_a_row_sent_before_a_stop_keeps_its_success_when_resume_finds_it_unchanged(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", HEADER, [[mobile(i), f"Name{i}", "Pune"] for i in range(60)])
    config = str(write_config(tmp_path, server.url, limits={"rate_per_minute": 600}))
    first = _run(str(source), "--config", config, "--only-changed", "--max-runtime", "2s")
    assert first["exit_code"] == 4 and 1 <= first["success"] < 60
    sent_first = {r["_row"] for r in read_report(first["reports"]["success"])}

    second = _run(str(source), "--config", config, "--only-changed", "--rate-per-minute", "60000")
    assert second["exit_code"] == 0 and second["resumed"]
    assert len(customer_puts(server)) == 60       # nothing sent twice
    success = {r["_row"] for r in read_report(second["reports"]["success"])}
    assert success == {str(row) for row in range(2, 62)} and sent_first <= success
    assert second["skipped"] == 0


def test_a_shard_skips_its_unchanged_rows_and_only_its_rows(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "export.csv", HEADER, [[mobile(i), f"Name{i}", "Pune"] for i in range(200)])
    config = str(write_config(tmp_path, server.url))
    first = _run(str(source), "--config", config, "--shard", "1/2")
    shard_rows = sorted(int(r["_row"]) for r in read_report(first["reports"]["success"]))
    assert 50 < len(shard_rows) < 150 and first["success"] == len(shard_rows)
    again = _run(str(source), "--config", config, "--shard", "1/2", "--only-changed", "--restart")
    assert (again["requests"], again["skipped"], again["rows"]) == (0, len(shard_rows), len(shard_rows))
    assert [int(r["_row"]) for r in read_report(again["reports"]["skipped"])] == shard_rows


def test_run_of_rows_boundaries_match_the_unchanged_mask():
    from batch_updater.output.progress import Progress
    from batch_updater.rows.prepare import PreparedChunk
    from batch_updater.state.resume import skip_unchanged as _skip_unchanged

    class Recorder:
        def record_skipped(self, runs, message):
            self.runs = list(runs)

    rng = np.random.default_rng(8)
    for _ in range(200):
        size = int(rng.integers(1, 30))
        mask = rng.random(size) < 0.7
        rows = sorted(rng.choice(np.arange(2, 100), size=size, replace=False).tolist())
        recorder, progress = Recorder(), Progress(None, 60)
        _skip_unchanged(PreparedChunk([], [], rows, mask), set(), recorder, progress)
        covered = [row for first, last in getattr(recorder, "runs", []) for row in rows
                   if first <= row <= last]
        assert covered == [row for row, unchanged in zip(rows, mask) if unchanged]
        assert progress.skipped == int(mask.sum())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.one_of(st.text(max_size=6), st.just(float("nan"))), min_size=2, max_size=2),
                min_size=1, max_size=6),
       st.sampled_from(["same", "unchanged, again", 'a "quoted" reason']))
def test_a_run_written_as_joined_lines_reads_as_the_csv_module_writes_it(cells, reason):
    import csv
    import io

    from batch_updater.output.csvsafe import neutralise
    from batch_updater.output.reports import ReportCounts, _Writer

    rows = list(range(2, 2 + len(cells)))
    handle = io.StringIO()
    _Writer(io.StringIO(), io.StringIO(), handle, [], ReportCounts()).skipped_run(
        rows, [list(c) for c in cells], [str(row) for row in rows], reason)
    expected = io.StringIO()
    csv.writer(expected).writerows([row, row, neutralise(reason), "false", "", *c] for row, c in zip(rows, cells))
    assert handle.getvalue() == expected.getvalue()


_text = st.text(alphabet=st.sampled_from(list("ab1=+-@'\",\n ")), max_size=5)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["success", "error", "skipped", None]), _text, _text, _text,
                          st.lists(st.one_of(_text, st.just(float("nan"))), min_size=2, max_size=2)),
                min_size=1, max_size=8))
def test_success_rows_written_in_bulk_read_as_the_row_by_row_writer_wrote_them(tmp_path_factory, cases):
    import csv
    import io

    from batch_updater.output.csvsafe import neutralise

    folder = tmp_path_factory.mktemp("bulk")
    rows = list(range(2, 2 + len(cases)))
    expected = io.StringIO()
    with Journal(folder / "journal.sqlite") as journal:
        for row, (status, identifier, customer_id, warnings, _) in zip(rows, cases):
            if status:
                journal.record(RowOutcome(row, Status(status), message="m", http_status=200, attempts=1,
                                          customer_id=customer_id, warnings=warnings, identifier=identifier,
                                          in_doubt=row % 2 == 0))
            if status == "success":
                csv.writer(expected).writerow([row, row, "updated", neutralise(identifier), neutralise(customer_id),
                                               200, 1,
                                               neutralise(warnings), "true" if row % 2 == 0 else "false"]
                                              + [neutralise(c) for c in cases[row - 2][4]])
        journal.flush()
        frame = pd.DataFrame([c[4] for c in cases], dtype=object)
        paths = ReportPaths.in_folder(folder)
        counts = write_reports(paths, ["a", "b"], [Chunk(2, frame)], journal)
    with open(paths.success, newline="", encoding="utf-8") as handle:
        assert handle.read().split("\r\n", 1)[1] == expected.getvalue()
    successes = [row for row, case in zip(rows, cases) if case[0] == "success"]
    assert counts.success == len(successes) and counts.rows == len(cases)
    assert counts.in_doubt == sum(1 for row, case in zip(rows, cases) if case[0] and row % 2 == 0)
