"""report.html: a run's page in one self-contained file (no script, font or image fetched).

It is built from the run folder's summary.json, the journal's minutes (state/journal.py's
`minute` table: every run of the job, one row per minute of sending, never one per row)
and the first rows of each error group in errors.csv. Identifiers are masked as in the
logs, and no setting that could hold a secret is shown as it is. The charts are inline
SVG drawn by matplotlib, imported only when a report is built, so start-up stays fast.

A merged-shards folder (`batch-updater merge`) has no journal of its own: its charts add
up the minutes of each shard's journal, found through the merged summary's `shards`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sqlite3
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..errors import InputError
from ..outcomes import RowOutcome, Stage, Status
from ..state.journal import MINUTE_COLUMNS
from .csvsafe import restore
from .masking import mask_identifier, mask_text
from .reports import identifier_columns, write_private
from .tallies import cause_of  # how summary.json's top_errors group rows: to find each group's examples

REPORT_NAME = "report.html"
EXAMPLES_PER_GROUP = 3
EXAMPLE_SCAN_ROWS = 100_000  # errors.csv rows read at most to find the examples (a large file stays quick)
MAX_POINTS = 480             # points per chart line: a longer job is averaged over bins of minutes
_RUN_FOLDER = re.compile(r"(dry-)?run-(\d{8}T\d{6}Z)(-\d+)?")
_EXIT_STATUS = {0: "completed", 1: "completed_with_errors", 3: "aborted", 4: "stopped"}


def write_report_html(folder: Path) -> Path:
    """Write report.html into a run folder (or a job folder's newest run, or a merged-shards
    folder) and return its path. Raises InputError for a folder without a run."""
    run_folder = find_run_folder(Path(folder))
    page = build_report(run_folder)
    target = run_folder / REPORT_NAME
    temporary = run_folder / f".{REPORT_NAME}.{os.getpid()}"
    write_private(temporary, page.encode())  # masked, but still about customers: owner only
    temporary.replace(target)  # a browser or a copy never sees half a page
    return target


def find_run_folder(folder: Path) -> Path:
    """The folder itself when it holds summary.json; for a job folder, its `latest` run,
    else its newest run-* folder."""
    if (folder / "summary.json").is_file():
        return folder
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; pass a run, job or merged folder")
    if (folder / "latest" / "summary.json").is_file():
        return (folder / "latest").resolve()
    runs = [p for p in _run_folders(folder) if not p.name.startswith("dry-")]
    if not runs:
        raise InputError(f"{folder}: no summary.json, and no run folder in it; pass a run, job or merged folder")
    return runs[-1]


def _run_folders(job_folder: Path) -> list[Path]:
    """A job's run and dry-run folders with a summary, oldest first."""
    found = [(match, p) for p in job_folder.iterdir() if (match := _RUN_FOLDER.fullmatch(p.name))]
    found = [(m, p) for m, p in found if (p / "summary.json").is_file()]
    return [p for m, p in sorted(found, key=lambda mp: (mp[0].group(2), int((mp[0].group(3) or "-0")[1:])))]


def _run_numbers(job_folder: Path) -> dict[str, int]:
    """'run-...' folder name → its number in the job (1 for the first), as the page shows them."""
    runs = [p.name for p in _run_folders(job_folder) if not p.name.startswith("dry-")]
    return {name: n for n, name in enumerate(runs, 1)}


def build_report(run_folder: Path) -> str:
    summary = _load_summary(run_folder / "summary.json")
    shards = _shard_summaries(summary)
    if shards:
        summary = _merged_view(summary, [s for s, _ in shards])
    runs, unavailable = _chart_runs(run_folder, summary, shards)
    sections = [_header(run_folder, summary), _headline(summary), _charts_section(runs, summary, unavailable),
                _errors_section(run_folder, summary), _warnings_section(summary),
                _shards_section(run_folder, shards) if shards else _runs_section(run_folder),
                _settings_section(summary)]
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(_title(summary))}</title><style>{_CSS}</style></head>\n<body><main>\n"
            + "\n".join(sections)
            + f"\n<footer>Built {generated} by batch-updater from summary.json and the job's journal."
              " Identifiers are masked; errors.csv holds the rows in full.</footer>\n</main></body></html>\n")


# -- reading ---------------------------------------------------------------------------------------

def _load_summary(path: Path) -> dict[str, Any]:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable summary ({exc})") from None


def _shard_summaries(summary: dict) -> list[tuple[dict, Path]]:
    """A merged folder's shards: each one's summary and run folder (those still found)."""
    found = []
    for shard in summary.get("shards") or []:
        path = Path(shard.get("summary", ""))
        if path.is_file():
            try:
                found.append((orjson.loads(path.read_bytes()), path.parent))
            except (OSError, orjson.JSONDecodeError):
                continue
    return found


def _merged_view(merged: dict, shards: list[dict]) -> dict:
    """What a merged summary lacks, from its shards: statuses, times, rates and limits added up."""
    view = dict(shards[0]) | merged
    view["status"] = _EXIT_STATUS.get(merged.get("exit_code", -1), "")
    statuses: dict[str, int] = {}
    for shard in shards:
        for code, count in (shard.get("http_statuses") or {}).items():
            statuses[code] = statuses.get(code, 0) + count
    view["http_statuses"] = statuses
    view["started"] = min(s.get("started", "") for s in shards)
    view["finished"] = max(s.get("finished", "") for s in shards)
    view["duration_seconds"] = max(s.get("duration_seconds", 0) for s in shards)
    for key in ("achieved_rate_per_minute", "rate_limit_per_minute", "achieved_add_rate_per_minute",
                "add_rate_limit_per_minute"):
        values = [float(s[key]) for s in shards if s.get(key) is not None]
        view[key] = round(sum(values), 1) if values else None
    view["shard"] = f"{len(shards)} shards merged"
    view["job_id"] = ", ".join(str(s.get("job_id")) for s in shards)
    view["reason"] = "; ".join(sorted({s["reason"] for s in shards if s.get("reason")})) or None
    return view


def read_minutes(journal: Path, run: str | None = None) -> list[dict]:
    """A journal's minutes (every run's, or one run's), read without opening it as a Journal,
    which would take in the logs of a process that may still be writing them."""
    if not journal.is_file():
        return []
    names = ("run", *MINUTE_COLUMNS)
    where, parameters = ("WHERE run = ?", (run,)) if run else ("", ())
    try:
        db = sqlite3.connect(journal, timeout=2.0)
        try:
            found = db.execute(f"SELECT {', '.join(names)} FROM minute {where} ORDER BY minute", parameters)
            return [dict(zip(names, values)) for values in found.fetchall()]
        finally:
            db.close()
    except sqlite3.Error:  # a journal of an earlier version (no minute table), or not one at all
        return []


@dataclass
class _Run:
    label: str            # "run 1" ... or "all shards"
    name: str             # the run folder's name
    minutes: list[dict]
    current: bool = False


def _chart_runs(run_folder: Path, summary: dict, shards: list[tuple[dict, Path]]) -> tuple[list[_Run], str]:
    """The runs the charts show, or why there are none."""
    if shards:
        per_shard = [read_minutes(folder.parent / "journal.sqlite", folder.name) for _, folder in shards]
        combined = _add_up(per_shard)
        if not combined:
            return [], "the shards' journals are not found next to their run folders, or hold no minutes"
        return [_Run("all shards", "all shards", combined, current=True)], ""
    if summary.get("shards") is not None:
        return [], "the shards' run folders named in summary.json are not found"
    if summary.get("status") == "dry_run":
        return [], "a dry run sends nothing"
    own = run_folder / "journal.sqlite"
    minutes = read_minutes(own if own.is_file() else run_folder.parent / "journal.sqlite")
    numbers = _run_numbers(run_folder.parent)
    names = sorted({m["run"] for m in minutes}, key=lambda name: (numbers.get(name, 0), name))
    runs = [_Run(f"run {numbers.get(name, '?')}", name, [m for m in minutes if m["run"] == name],
                 current=name == run_folder.name) for name in names]
    return runs, "" if runs else "the job's journal holds no minutes of sending (nothing sent, or an earlier version)"


def _add_up(per_shard: list[list[dict]]) -> list[dict]:
    """Shards send at once, against one key's limits: their minutes added up (answer times:
    the median weighted by requests, the worst p95)."""
    by_minute: dict[int, dict] = {}
    for minutes in per_shard:
        for m in minutes:
            total = by_minute.setdefault(m["minute"], {"minute": m["minute"], "p50_sum": 0.0, "p50_weight": 0,
                                                       "p95_ms": None})
            for key in ("requests", "adds", "retries", "throttled", "server_errors", "network"):
                total[key] = total.get(key, 0) + (m[key] or 0)
            if m["p50_ms"] is not None:
                total["p50_sum"] += m["p50_ms"] * (m["requests"] or 1)
                total["p50_weight"] += m["requests"] or 1
                total["p95_ms"] = max(total["p95_ms"] or 0.0, m["p95_ms"] or 0.0)
    for total in by_minute.values():
        total["p50_ms"] = total["p50_sum"] / total["p50_weight"] if total["p50_weight"] else None
    return [by_minute[minute] for minute in sorted(by_minute)]


# -- the page's parts ------------------------------------------------------------------------------

def _title(s: dict) -> str:
    return f"batch-updater: {Path(str(s.get('input') or 'merged shards')).name}"


def _header(run_folder: Path, s: dict) -> str:
    facts = [("input", s.get("input")), ("job", s.get("job_id")), ("run", run_folder.name),
             ("shard", s.get("shard")), ("mode", s.get("mode")), ("started", s.get("started")),
             ("finished", s.get("finished"))]
    shown = " · ".join(f"{name} <code>{escape(str(value))}</code>" for name, value in facts if value)
    return f"<header><h1>{escape(_title(s))}</h1><p class=\"facts\">{shown}</p></header>"


def _number(key: str, value: Any, text: str | None = None) -> str:
    """A figure from summary.json, tagged with its key and raw value (the tests compare them)."""
    shown = text if text is not None else _format(value)
    return f"<b data-key=\"{key}\" data-value=\"{escape(str(value))}\">{escape(shown)}</b>"


def _cell(value: Any) -> str:
    return escape(_format(value))


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def _card(label: str, body: str, extra: str = "", kind: str = "") -> str:
    return f"<div class=\"card {kind}\"><span class=\"label\">{label}</span>{body}{extra}</div>"


def _headline(s: dict) -> str:
    status = str(s.get("status", ""))
    reason = f"<small>{escape(_redact_text(str(s['reason'])))}</small>" if s.get("reason") else ""
    upsert = s.get("mode") == "upsert"
    updated = s.get("updated", s.get("success", 0) - s.get("created", 0))
    stages = [("validation", "validation_errors"), ("api", "api_errors")]
    stages += [("create", "create_errors")] if upsert else []
    stages += [("network", "network_errors")]
    breakdown = " · ".join(f"{name} {_number(key, s.get(key, 0))}" for name, key in stages)
    cards = [
        _card("status", _number("status", status, status.replace("_", " ")), reason,
              kind="status " + _STATUS_KIND.get(status, "")),
        _card("exit code", _number("exit_code", s.get("exit_code"))),
        _card("rows", _number("rows", s.get("rows", 0))),
        _card("updated", _number("updated", updated),
              f"<small>{_number('updated_with_warnings', s.get('updated_with_warnings', 0))} with warnings</small>"),
        *([_card("created", _number("created", s.get("created", 0)))] if upsert else []),
        _card("errors", _number("errors", s.get("errors", 0)), f"<small>{breakdown}</small>",
              kind="bad" if s.get("errors") else ""),
        _card("skipped", _number("skipped", s.get("skipped", 0))),
        _card("not sent", _number("not_sent", s.get("not_sent", 0)),
              f"<small>{_number('to_send_again', s.get('to_send_again', 0))} to send again</small>",
              kind="warn" if s.get("not_sent") else ""),
        _card("in doubt", _number("in_doubt", s.get("in_doubt", 0)), kind="warn" if s.get("in_doubt") else ""),
    ]
    pace = [
        _card("duration", _number("duration_seconds", s.get("duration_seconds", 0),
                                  _duration(s.get("duration_seconds") or 0))),
        _rate_card("update rate", s, "achieved_rate_per_minute", "rate_limit_per_minute"),
        *([_rate_card("add rate", s, "achieved_add_rate_per_minute", "add_rate_limit_per_minute")] if upsert else []),
        _card("requests", _number("requests", s.get("requests", 0)),
              f"<small>{_number('add_requests', s.get('add_requests', 0))} adds</small>" if upsert else ""),
        _card("retries", _number("retries", s.get("retries", 0))),
        _card("throttled (429)", _number("throttled", s.get("throttled", 0))),
    ]
    return ("<section id=\"headline\"><h2>Headline</h2>"
            f"<div class=\"cards\">{''.join(cards)}</div><div class=\"cards\">{''.join(pace)}</div></section>")


_STATUS_KIND = {"completed": "good", "completed_with_errors": "warn", "aborted": "bad", "stopped": "warn",
                "dry_run": ""}


def _rate_card(label: str, s: dict, rate_key: str, limit_key: str) -> str:
    rate, limit = s.get(rate_key) or 0.0, s.get(limit_key)
    share = min(100.0, rate / limit * 100) if limit else 0.0
    meter = f"<span class=\"meter\"><span style=\"width:{share:.0f}%\"></span></span>"
    return _card(label, f"{_number(rate_key, rate)}/min",
                 f"<small>limit {_number(limit_key, limit)}/min ({share:.0f}%)</small>{meter}")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _errors_section(run_folder: Path, s: dict) -> str:
    groups = s.get("top_errors") or []
    if not groups:
        return "<section id=\"errors\"><h2>Errors</h2><p>No errors.</p></section>"
    examples = _examples(run_folder / "errors.csv", groups, (s.get("config") or {}).get("columns") or {})
    rows = []
    for index, group in enumerate(groups):
        cause = " ".join(filter(None, (group.get("code"), group.get("message")))) or group.get("stage", "")
        shown = "".join(f"<li>{example}</li>" for example in examples[index])
        first = f"<br><small>e.g. row {_cell(group.get('example_row'))}</small>"
        listed = f"<ul class=\"examples\">{shown}</ul>" if shown else first
        rows.append(f"<tr><td class=\"num\">{_cell(group.get('count', 0))}</td>"
                    f"<td>{escape(str(group.get('stage', '')))}</td><td>{escape(cause)}{listed}</td></tr>")
    total = s.get("errors", 0)
    return ("<section id=\"errors\"><h2>Errors by cause</h2>"
            f"<p>{_cell(total)} rows in <a href=\"errors.csv\">errors.csv</a> (every column, ready to fix and feed"
            f" back). The largest groups, with their first rows (identifiers masked):</p>"
            "<table class=\"groups\"><thead><tr><th>rows</th><th>stage</th><th>cause and examples</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></section>")


_QUOTED = re.compile(r'"((?:[^"]|"")*)"')


def _examples(errors_csv: Path, groups: list[dict], renames: dict) -> dict[int, list[str]]:
    """The first few rows of each group, read from errors.csv until every group has its
    few (or EXAMPLE_SCAN_ROWS rows were read): row number, masked identifier, masked message."""
    wanted: dict[tuple, list[int]] = {}  # groups that differ only in what masking hid share a key
    for i, g in enumerate(groups):
        wanted.setdefault((g.get("stage"), g.get("code"), g.get("message")), []).append(i)
    missing = {i: min(g.get("count") or 1, EXAMPLES_PER_GROUP) for i, g in enumerate(groups)}
    found: dict[int, list[str]] = {i: [] for i in missing}
    keys: dict[tuple, tuple] = {}  # an API's messages repeat: each grouped once
    for row, identifier, stage, code, message, status in _error_rows(errors_csv, renames):
        key = keys.get((stage, code, message, status)) or _group_key(row, stage, code, message, status)
        if stage != Stage.VALIDATION.value:  # a validation message quotes its cell: one per row
            keys[(stage, code, message, status)] = key
        index = next((i for i in wanted.get(key, ()) if i in missing), None)
        if index is None:
            continue
        http = f" · HTTP {escape(status)}" if status else ""
        detail = _detail(stage, message, identifier, groups[index].get("message") or "")
        found[index].append(f"row {row} · <code>{escape(identifier or '-')}</code>{http}{detail}")
        missing[index] -= 1
        if not missing[index]:
            del missing[index]
            if not missing:
                break
    return found


def _detail(stage: str, message: str, identifier: str, group_message: str) -> str:
    """What a row's message adds to its group's: a validation message's cell value (masked),
    or an API message that differs (masked)."""
    if stage == Stage.VALIDATION.value:
        values = [mask_identifier(value) for value in _QUOTED.findall(message)]
        values = [value for value in values if value and value != identifier]
        return "".join(f" · value <code>{escape(value)}</code>" for value in values[:1])
    shown = mask_text(message.strip())
    return f" · {escape(shown)}" if shown != mask_text(group_message) else ""


def _group_key(row: int, stage: str, code: str, message: str, status: str) -> tuple:
    """The (stage, code, message) of the summary.json group a row of errors.csv is in."""
    try:
        stage_value = Stage(stage)
    except ValueError:
        return (None, None, None)
    outcome = RowOutcome(row, Status.ERROR, stage_value, code, message, int(status) if status.isdigit() else None)
    group_code, group_message = cause_of(outcome)
    if stage_value is not Stage.VALIDATION:
        group_message = mask_text(group_message)  # as ErrorGroups shows it
    return (stage, group_code, group_message)


def _error_rows(path: Path, renames: dict) -> Iterator[tuple[int, str, str, str, str, str]]:
    """(row, masked identifier, stage, code, message, HTTP status) per errors.csv row, streamed."""
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed below; a generator
    except OSError:
        return
    with handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        try:
            at = {name: header.index(name) for name in ("_row", "_stage", "_code", "_message", "_http_status")}
        except ValueError:
            return
        ids = identifier_columns(header, renames)
        for count, cells in enumerate(reader):
            if count >= EXAMPLE_SCAN_ROWS:
                return
            if len(cells) != len(header) or not cells[at["_row"]].isdigit():
                continue
            identifier = next((restore(cells[i]) for i in ids if cells[i]), "")
            yield (int(cells[at["_row"]]), _mask_once(identifier), cells[at["_stage"]], restore(cells[at["_code"]]),
                   restore(cells[at["_message"]]), cells[at["_http_status"]])


def _mask_once(value: str) -> str:
    return value if "*" in value else mask_identifier(value)  # reports masked by the run are not masked twice


def _warnings_section(s: dict) -> str:
    by_code = s.get("warnings") or {}
    if not by_code:
        return "<section id=\"warnings\"><h2>Warnings</h2><p>No warnings.</p></section>"
    rows = "".join(f"<tr><td class=\"num\">{_cell(count)}</td><td><code>{escape(str(code))}</code></td>"
                   f"<td>{escape(_WARNING_TEXT.get(str(code), ''))}</td></tr>" for code, count in by_code.items())
    return ("<section id=\"warnings\"><h2>Warnings</h2>"
            f"<p>{_number('updated_with_warnings', s.get('updated_with_warnings', 0))} rows were applied with"
            " warnings (<code>_warnings</code> in success.csv says which). Rows per warning code:</p>"
            f"<table><thead><tr><th>rows</th><th>code</th><th>meaning</th></tr></thead><tbody>{rows}</tbody>"
            "</table></section>")


_WARNING_TEXT = {"91015": "an extended field the org has not configured: the API dropped it"}


def _runs_section(run_folder: Path) -> str:
    numbers = _run_numbers(run_folder.parent)
    rows = []
    for folder in _run_folders(run_folder.parent):
        try:
            s = orjson.loads((folder / "summary.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        target = "report.html" if (folder / REPORT_NAME).is_file() or folder == run_folder else "summary.json"
        href = escape(os.path.relpath(folder / target, run_folder))
        mark = " class=\"current\"" if folder == run_folder else ""
        label = f"run {numbers[folder.name]}" if folder.name in numbers else "dry run"
        rows.append(f"<tr{mark}><td><a href=\"{href}\">{escape(label)}</a> <code>{escape(folder.name)}</code></td>"
                    f"<td>{escape(str(s.get('started', '')))}</td><td>{escape(str(s.get('status', '')))}</td>"
                    + "".join(f"<td class=\"num\">{_cell(s.get(key))}</td>" for key in _RUN_FIGURES) + "</tr>")
    heads = "".join(f"<th>{name}</th>" for name in ("run", "started", "status", *_RUN_FIGURES.values()))
    return ("<section id=\"runs\"><h2>Runs of this job</h2><p>Numbered as in the charts; the highlighted row is"
            f" this report's run.</p><table><thead><tr>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            "</section>")


_RUN_FIGURES = {"exit_code": "exit", "rows": "rows", "success": "applied", "errors": "errors",
                "not_sent": "not sent", "requests": "requests", "achieved_rate_per_minute": "per min",
                "duration_seconds": "seconds"}


def _shards_section(run_folder: Path, shards: list[tuple[dict, Path]]) -> str:
    rows = []
    for s, folder in shards:
        href = escape(os.path.relpath(folder / "summary.json", run_folder))
        rows.append(f"<tr><td><a href=\"{href}\">shard {escape(str(s.get('shard')))}</a></td>"
                    f"<td>{escape(str(s.get('status', '')))}</td>"
                    + "".join(f"<td class=\"num\">{_cell(s.get(key))}</td>" for key in _RUN_FIGURES) + "</tr>")
    heads = "".join(f"<th>{name}</th>" for name in ("shard", "status", *_RUN_FIGURES.values()))
    return ("<section id=\"runs\"><h2>Shards merged here</h2>"
            f"<table><thead><tr>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table></section>")


# -- settings, masked ------------------------------------------------------------------------------

_KEY_SETTINGS = ("api.base_url", "api.source", "api.identifier_name", "api.account_id", "api.mode", "api.auth",
                 "api.username", "limits.rate_per_minute", "limits.window_seconds", "limits.concurrency",
                 "limits.max_attempts", "limits.timeout_seconds", "create_limits.rate_per_minute",
                 "api.fail_on_warnings", "api.already_enrolled", "input.duplicates", "input.max_invalid",
                 "state.only_changed", "output.mask_identifiers")
_SECRET_KEY = re.compile(r"password|secret|token|credential|(?:^|_)key$|webhook", re.IGNORECASE)
_URL_USER = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_SECRET_QUERY = re.compile(r"([?&][^=&#\s]*(?:token|key|secret|sig|pass|auth)[^=&#\s]*=)[^&#\s]+", re.IGNORECASE)


def _redact_text(text: str) -> str:
    """Credentials in URLs (user:password@, ?token=...) and identifiers masked."""
    return mask_text(_SECRET_QUERY.sub(r"\1***", _URL_USER.sub(r"\1***@", text)))


def _redact(key: str, value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "not set"
    name = key.rsplit(".", 1)[-1]
    if _SECRET_KEY.search(name) and not name.endswith(("_file", "_path")):
        return "*** (set)"  # never shown, whatever it is
    if isinstance(value, (dict, list)):
        return _redact_text(orjson.dumps(value).decode())
    return _redact_text(_format(value))


def _flatten(config: dict) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in config.items():
        if isinstance(values, dict) and section != "columns":
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return flat


def _settings_section(s: dict) -> str:
    flat = _flatten(s.get("config") or {})
    if s.get("mode") != "upsert":
        flat = {k: v for k, v in flat.items() if not k.startswith("create_limits.")}
    main = [key for key in _KEY_SETTINGS if key in flat] + (["columns"] if flat.get("columns") else [])

    def rows(keys: list[str]) -> str:
        return "".join(f"<tr><th>{escape(key)}</th><td><code>{escape(_redact(key, flat[key]))}</code></td></tr>"
                       for key in keys)

    rest = [key for key in flat if key not in main]
    more = (f"<details><summary>every setting ({len(flat)})</summary><table class=\"settings\">{rows(rest)}"
            "</table></details>" if rest else "")
    body = f"<table class=\"settings\">{rows(main)}</table>{more}" if flat else "<p>Not in summary.json.</p>"
    return f"<section id=\"settings\"><h2>Settings that matter</h2>{body}</section>"


# -- charts ----------------------------------------------------------------------------------------

CHART_IDS = ("chart-rate", "chart-latency", "chart-trouble", "chart-statuses")
_CHART_TITLES = {"chart-rate": "Requests per minute against the limit",
                 "chart-latency": "Answer time per minute (median and 95th percentile)",
                 "chart-trouble": "Retries, 429s, 5xx and network failures per minute",
                 "chart-statuses": "Requests by HTTP status"}


def _charts_section(runs: list[_Run], s: dict, unavailable: str) -> str:
    import matplotlib  # here only: its import is too slow for every command

    figures: dict[str, str] = {}
    note = ""
    with matplotlib.rc_context(_STYLE), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nan-means of bins with no answer
        if runs:
            line = _Timeline(runs)
            note = f"<p>{escape(_chart_note(line))}</p>"
            figures["chart-rate"] = _svg(_rate_chart(line, s))
            figures["chart-latency"] = _svg(_latency_chart(line))
            figures["chart-trouble"] = _svg(_trouble_chart(line))
        statuses = _status_counts(s, runs)
        if statuses:
            figures["chart-statuses"] = _svg(_status_chart(statuses))
    parts = []
    for chart_id in CHART_IDS:
        body = figures.get(chart_id) or f"<p class=\"none\">Not available: {escape(unavailable or 'no requests')}.</p>"
        parts.append(f"<figure id=\"{chart_id}\"><figcaption>{_CHART_TITLES[chart_id]}</figcaption>{body}</figure>")
    return f"<section id=\"charts\"><h2>Charts</h2>{note}<div class=\"charts\">{''.join(parts)}</div></section>"


def _chart_note(line: _Timeline) -> str:
    note = "Time in UTC."
    if line.bin > 1:
        note += (f" Each step or point is the mean per minute of {line.bin} minutes (the 95th percentile:"
                 " the worst of them), which keeps the page small.")
    if len(line.runs) > 1:
        note += (f" The job's {len(line.runs)} runs are drawn one after another (the time between them left"
                 " out), each in its own band; the highlighted band is this report's run.")
    return note


_STYLE: dict[Any, Any] = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
          "axes.grid": True, "grid.color": "#e4e7eb", "grid.linewidth": 0.6, "axes.edgecolor": "#9aa5b1",
          "axes.titlesize": 9, "legend.fontsize": 8, "legend.frameon": False, "lines.linewidth": 1.3,
          "font.family": ["DejaVu Sans", "sans-serif"]}
_COLOURS = {"updates": "#2563eb", "adds": "#059669", "limit": "#dc2626", "p50": "#2563eb", "p95": "#d97706",
            "retries": "#7c3aed", "429": "#d97706", "5xx": "#dc2626", "no answer": "#475569"}


class _Timeline:
    """The runs' minutes on one x axis (minutes since the epoch for the first run, so
    ticks fall on round clock times; later runs follow on), densified and binned."""

    COUNTS = ("requests", "adds", "retries", "throttled", "server_errors", "network")

    def __init__(self, runs: list[_Run]):
        spans = [(r.minutes[-1]["minute"] - r.minutes[0]["minute"]) // 60 + 1 for r in runs]
        self.bin = max(1, math.ceil(sum(spans) / MAX_POINTS))
        self.runs = runs
        self.starts: list[float] = []    # x of each run's first minute
        self.firsts: list[int] = []      # epoch seconds of each run's first minute
        self.parts: list[dict[str, np.ndarray]] = []  # each run's bins, and their edges
        x = runs[0].minutes[0]["minute"] / 60
        for run, span in zip(runs, spans):
            self.starts.append(x)
            self.firsts.append(run.minutes[0]["minute"])
            binned = self._binned(run, span)
            binned["edges"] = x + np.arange(len(binned["requests"]) + 1) * self.bin
            self.parts.append(binned)
            x = float(binned["edges"][-1])
        self.end = x
        self.totals = {key: sum(m.get(key) or 0 for run in runs for m in run.minutes) for key in self.COUNTS}
        self.marker = "o" if sum(len(p["requests"]) for p in self.parts) <= 60 else None  # a short job's points

    def _binned(self, run: _Run, span: int) -> dict[str, np.ndarray]:
        first = run.minutes[0]["minute"]
        size = math.ceil(span / self.bin) * self.bin
        dense = {key: np.full(size, np.nan) for key in (*self.COUNTS, "p50_ms", "p95_ms")}
        for key in self.COUNTS:
            dense[key][:span] = 0.0  # a minute without a row inside a run sent nothing
        for m in run.minutes:
            at = (m["minute"] - first) // 60
            for key in dense:
                dense[key][at] = np.nan if m.get(key) is None else m[key]
        shaped = {key: values.reshape(-1, self.bin) for key, values in dense.items()}
        binned = {key: np.nanmean(values, axis=1) for key, values in shaped.items() if key != "p95_ms"}
        binned["p95_ms"] = np.nanmax(shaped["p95_ms"], axis=1)  # the worst minute of a bin: spikes stay visible
        return binned

    def steps(self, ax, values_of, **style) -> float:
        """Draw a count per minute as steps (flat over its minute or bin), one path per run;
        returns the highest value."""
        highest = 0.0
        for n, part in enumerate(self.parts):
            values = values_of(part)
            ax.stairs(values, part["edges"], baseline=None, linewidth=1.6, zorder=2,  # over the grid, as lines
                      **(style if n == 0 else style | {"label": None}))  # one legend entry
            highest = max(highest, float(np.nanmax(values)) if np.isfinite(values).any() else 0.0)
        return highest

    def points(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """x (each bin's middle) and the values of every run, a NaN between runs so that no
        line joins two runs."""
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        for part in self.parts:
            xs += [(part["edges"][:-1] + part["edges"][1:]) / 2, np.array([np.nan])]
            ys += [part[key], np.array([np.nan])]
        return np.concatenate(xs[:-1]), np.concatenate(ys[:-1])

    def clock(self, x: float) -> str:
        """The UTC time of an x position."""
        index = max(0, min(len(self.starts) - 1, int(np.searchsorted(self.starts, x, side="right")) - 1))
        seconds = self.firsts[index] + (x - self.starts[index]) * 60
        return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M")


def _axes(line: _Timeline, height: float = 2.5):
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    figure = Figure(figsize=(9, height), layout="constrained")
    ax = figure.add_subplot()
    span = max(line.end - line.starts[0], 1)
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440) if span / s <= 8), 2880)
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: line.clock(x)))
    ax.set_xlim(line.starts[0], max(line.end, line.starts[0] + 1))
    if len(line.runs) > 1:
        for n, (run, start) in enumerate(zip(line.runs, line.starts)):
            end = line.starts[n + 1] if n + 1 < len(line.starts) else line.end
            ax.axvspan(start, end, color="#fef3c7" if run.current else ("#f1f5f9" if n % 2 else "#ffffff"), zorder=0)
            ax.text(start, 1.0, f" {run.label}", transform=ax.get_xaxis_transform(), va="bottom", fontsize=7,
                    color="#475569")
    return figure, ax


def _rate_chart(line: _Timeline, s: dict):
    figure, ax = _axes(line, 2.8)
    limit, add_limit = s.get("rate_limit_per_minute"), s.get("add_rate_limit_per_minute")
    highest = line.steps(ax, lambda part: part["requests"] - part["adds"], color=_COLOURS["updates"],
                         label="update requests")
    if limit:
        ax.axhline(limit, color=_COLOURS["limit"], linestyle="--", linewidth=1, label=f"update limit {limit:,}/min")
    if line.totals["adds"] or add_limit:
        highest = max(highest, line.steps(ax, lambda part: part["adds"], color=_COLOURS["adds"], label="add requests"))
        if add_limit:
            ax.axhline(add_limit, color=_COLOURS["adds"], linestyle=":", linewidth=1,
                       label=f"add limit {add_limit:,}/min")
    ax.set_ylim(0, max(highest, limit or 0, add_limit or 0) * 1.3 or 1)  # room above the limit for the legend
    ax.set_ylabel("requests / minute")
    ax.legend(loc="lower right", ncols=4)
    return figure


def _latency_chart(line: _Timeline):
    figure, ax = _axes(line)
    highest = 1.0
    for key, label in (("p50_ms", "median"), ("p95_ms", "95th percentile")):
        x, y = line.points(key)
        ax.plot(x, y, color=_COLOURS[key[:3]], label=label, marker=line.marker, markersize=3)
        highest = max(highest, float(np.nanmax(y)) if np.isfinite(y).any() else 0.0)
    ax.set_ylim(0, highest * 1.3)  # room for the legend
    ax.set_ylabel("answer time (ms)")
    ax.legend(loc="upper right", ncols=2)
    return figure


def _trouble_chart(line: _Timeline):
    figure, ax = _axes(line)
    highest = 1.0
    for key, label in (("retries", "retries"), ("throttled", "429"), ("server_errors", "5xx"),
                       ("network", "no answer")):
        highest = max(highest, line.steps(ax, lambda part, key=key: part[key], color=_COLOURS[label],
                                          label=f"{label} ({line.totals[key]:,})"))
    ax.set_ylim(0, highest * 1.3)  # room for the legend
    ax.set_ylabel("per minute")
    ax.legend(loc="upper right", ncols=4)
    return figure


def _status_counts(s: dict, runs: list[_Run]) -> dict[str, int]:
    """This run's answers by HTTP status (summary.json), and its requests that got none (the minutes)."""
    counts = {str(code): int(count) for code, count in sorted((s.get("http_statuses") or {}).items())}
    current = [m for run in runs if run.current for m in run.minutes]
    unanswered = sum(m.get("network") or 0 for m in current)
    if unanswered:
        counts["no answer"] = unanswered
    return counts


def _status_chart(counts: dict[str, int]):
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(9, 0.5 + 0.32 * len(counts)), layout="constrained")
    ax = figure.add_subplot()
    labels = list(counts)
    colours = [_status_colour(label) for label in labels]
    bars = ax.barh(labels, list(counts.values()), color=colours, height=0.6)
    ax.bar_label(bars, labels=[f" {count:,}" for count in counts.values()], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=10)  # 1M 200s and three 503s on one chart
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_xlim(0, max(counts.values()) * 3)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("requests (log scale)")
    return figure


def _status_colour(label: str) -> str:
    if label == "429":
        return _COLOURS["429"]
    if label.startswith("2"):
        return "#16a34a"
    if label.startswith("5"):
        return _COLOURS["5xx"]
    return _COLOURS["no answer"] if not label[:1].isdigit() else "#f59e0b"


_SVG_START = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_SVG_NOISE = re.compile(r'\s(?:xmlns(?::xlink)?|version|width|height)="[^"]*"')  # of the <svg> tag only
_PLAIN_ID = re.compile(r'\sid="(?![a-z]+[0-9a-f]{10}")[^"]*"')  # figure_1, axes_1...: clash between charts


def _svg(figure) -> str:
    """The figure as inline SVG: no XML prologue or namespaces (HTML needs none), no fixed
    size (CSS sets it), only the ids the SVG refers to (the random ones: unique on the page)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = _SVG_START.sub("", buffer.getvalue(), count=1)
    head, rest = text.split(">", 1)
    return _PLAIN_ID.sub("", _SVG_NOISE.sub("", head) + ">" + rest).strip()


_CSS = """
:root{--ink:#1f2933;--muted:#52606d;--line:#e4e7eb;--good:#16a34a;--warn:#d97706;--bad:#dc2626}
*{box-sizing:border-box}
body{margin:0;background:#f5f7fa;color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"DejaVu Sans",sans-serif}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 12px}
header .facts{color:var(--muted);margin:0;overflow-wrap:anywhere}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:16px 0}
code{font:12px ui-monospace,"DejaVu Sans Mono",monospace;background:#f1f5f9;padding:1px 4px;border-radius:3px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(165px,1fr));gap:10px;margin-bottom:10px}
.card{border:1px solid var(--line);border-left:4px solid var(--line);border-radius:6px;padding:8px 10px}
.card .label{display:block;color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card b{font-size:22px;font-weight:600}.card small{display:block;color:var(--muted);font-size:12px}
.card small b{font-size:12px}
.card.status{grid-column:span 2}
.card.good{border-left-color:var(--good)}.card.warn{border-left-color:var(--warn)}.card.bad{border-left-color:var(--bad)}
.meter{display:block;height:5px;background:var(--line);border-radius:3px;margin-top:4px;overflow:hidden}
.meter span{display:block;height:100%;background:var(--good)}
.charts figure{margin:0 0 18px}.charts figcaption{font-weight:600;margin-bottom:4px}
.charts svg{width:100%;height:auto;display:block}
p.none{color:var(--muted);font-style:italic}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
thead th{color:var(--muted);font-weight:600;font-size:12px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.current td{background:#fef3c7}
table.settings th{width:35%;font-weight:500}
ul.examples{margin:4px 0 0;padding-left:18px;color:var(--muted);font-size:12px}
details{margin-top:10px}summary{cursor:pointer;color:var(--muted)}
footer{color:var(--muted);font-size:12px;margin:16px 0}
"""
