"""Merging the reports of a job's shards into one set, in row order."""

from __future__ import annotations

import csv
import heapq
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson

from ..errors import InputError
from ..outcomes import RowOutcome, Stage, Status
from .csvsafe import restore
from .reports import open_private, write_private
from .tallies import ErrorGroups

REPORTS = ("success.csv", "errors.csv", "skipped.csv")
SUMMED = ("rows", "success", "errors", "skipped", "not_sent", "validation_errors", "api_errors",
          "network_errors", "in_doubt", "in_doubt_requests", "requests", "retries", "throttled",
          "to_send_again", "sent_again", "updated_with_warnings", "updated", "created", "create_errors",
          "add_requests")


def merge_reports(run_folders: list[Path], output: Path) -> dict:
    """Combine the reports of every shard of a job into one set, in row order.

    Refuses when a row appears twice (the folders are not shards of one job) or when a
    shard is missing (the shards' summaries disagree on N or some index is absent).
    """
    summaries = [_summary(folder) for folder in run_folders]
    _check_shards(summaries, run_folders)
    output.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in REPORTS:
        _merge_file([folder / name for folder in run_folders], output / name)
    merged = {key: sum(s.get(key, 0) for s in summaries) for key in SUMMED}
    merged["exit_code"] = max(s["exit_code"] for s in summaries)
    for counted in ("warnings", "normalised"):  # per code, per column
        merged[counted] = dict(sum((Counter(s.get(counted, {})) for s in summaries), Counter()).most_common())
    merged["top_errors"] = _top_errors(output / "errors.csv")
    merged["shards"] = [{"shard": s.get("shard"), "summary": str(f / "summary.json"),
                         "exit_code": s["exit_code"]} for s, f in zip(summaries, run_folders)]
    merged["reports"] = {name.split(".")[0]: str(output / name) for name in REPORTS}
    write_private(output / "summary.json", orjson.dumps(merged, option=orjson.OPT_INDENT_2))
    return merged


def _top_errors(errors_csv: Path) -> list[dict]:
    """The merged errors grouped by cause, from the merged errors.csv (each shard's summary
    holds its top groups only)."""
    groups = ErrorGroups()
    with open(errors_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            status = row.get("_http_status") or ""
            groups.add(RowOutcome(int(row["_row"]), Status.ERROR, Stage(row["_stage"]), restore(row["_code"]),
                                  restore(row["_message"]), int(status) if status.isdigit() else None))
    return [group.as_dict() for group in groups.top()]


def _summary(folder: Path) -> dict:
    try:
        return orjson.loads((folder / "summary.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InputError(f"{folder}: no readable summary.json ({exc}); pass run folders") from None


def _check_shards(summaries: list[dict], folders: list[Path]) -> None:
    named = [s.get("shard") for s in summaries]
    shards = [shard for shard in named if shard is not None]
    if len(shards) < len(named):
        return  # unsharded runs (e.g. a file split by hand): the duplicate-row check still holds
    counts = {int(shard.split("/")[1]) for shard in shards}
    indexes = sorted(int(shard.split("/")[0]) for shard in shards)
    if len(counts) != 1 or indexes != list(range(1, counts.pop() + 1)):
        raise InputError(f"the folders hold shards {', '.join(shards)}: pass exactly one run of"
                         " every shard of the job")


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        position = header.index("_row")
        yield -1, header
        for cells in reader:
            yield int(cells[position]), cells


def _merge_file(sources: list[Path], target: Path) -> None:
    streams = [_rows(path) for path in sources if path.exists()]
    headers = [next(stream)[1] for stream in streams]
    if any(header != headers[0] for header in headers[1:]):
        raise InputError(f"{target.name}: the shards' reports have different columns")
    previous = None
    with open_private(target) as handle:  # personal data: owner only, like every report
        writer = csv.writer(handle)
        writer.writerow(headers[0] if headers else [])
        for row, cells in heapq.merge(*streams, key=lambda item: item[0]):
            if row == previous:
                raise InputError(f"row {row} is in more than one shard's {target.name}:"
                                 " these folders are not shards of one job")
            previous = row
            writer.writerow(cells)
