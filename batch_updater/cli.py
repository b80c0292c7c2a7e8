"""The command line: parse options, build the config, call the library, map errors to exit codes.

Heavy imports (pandas, pandera, aiohttp) happen inside the commands that need them,
so `batch-updater --help` stays fast.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from .errors import BatchUpdaterError, UsageError

DEMO_SAMPLE = "customers.csv"


def _fail(message: str, code: int) -> None:
    click.echo(f"batch-updater: error: {message}", err=True)
    sys.exit(code)


def _guarded(action):
    """Run a command body; every whole-run failure becomes one line and its exit code."""
    try:
        return action()
    except BatchUpdaterError as exc:
        lines = str(exc).splitlines() or [exc.__class__.__name__]
        if len(lines) > 1:
            click.echo("batch-updater: error: the configuration has problems:", err=True)
            for line in lines:
                click.echo(f"  - {line}", err=True)
            sys.exit(exc.exit_code)
        _fail(lines[0], exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 4)
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("BATCH_UPDATER_DEBUG"):
            raise
        _fail(f"internal error ({exc.__class__.__name__}: {exc}); please report it, with the"
              " traceback that BATCH_UPDATER_DEBUG=1 shows", 3)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="batch-updater")
def main() -> None:
    """Apply bulk customer updates from CSV and Excel files to Capillary's Update Customer Details API.

    The password or OAuth secret comes from BATCH_UPDATER_PASSWORD or the config's
    password_file, never from an option.
    """


# Each setting an option overrides, declared once: the flag, the config key it sets, and how.
# A flag option sets its key to `flag_value` when given (None, when not, leaves the key alone).
SETTING_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--base-url", "api.base_url", {"help": "API host, e.g. https://eu.api.capillarytech.com."}),
    ("--source", "api.source", {"help": "Source for the lookup (INSTORE, WEBSITE, ...)."}),
    ("--account-id", "api.account_id", {"help": "Account id, for multi-account sources."}),
    ("--identifier-name", "api.identifier_name",
     {"help": "Lookup identifier when the file has no identifierName column."}),
    ("--auth", "api.auth", {"type": click.Choice(["basic", "oauth"]), "help": "Authentication scheme."}),
    ("--username", "api.username", {"help": "Till code (basic) or OAuth key."}),
    ("--mode", "api.mode",
     {"type": click.Choice(["update", "upsert"]),
      "help": "upsert: add the customers the update cannot find (8015), on the Add Customer API."}),
    ("--rate-per-minute", "limits.rate_per_minute",
     {"type": int, "help": "Requests per window (a minute by default)."}),
    ("--create-rate-per-minute", "limits.create.rate_per_minute",
     {"type": int, "help": "Upsert: adds per window, the Add Customer API's own limit ([limits.create])."}),
    ("--concurrency", "limits.concurrency", {"type": int, "help": "Requests in flight at once."}),
    ("--timeout-seconds", "limits.timeout_seconds", {"type": float, "help": "Total time allowed per request."}),
    ("--max-attempts", "limits.max_attempts", {"type": int, "help": "Attempts per row for retryable failures."}),
    ("--output-dir", "output.dir", {"type": click.Path(file_okay=False), "help": "Folder for job and run reports."}),
    ("--encoding", "input.encoding", {"help": "Input text encoding (default UTF-8, with or without BOM)."}),
    ("--delimiter", "input.delimiter", {"help": "CSV delimiter (default: sniffed)."}),
    ("--sheet", "input.sheet", {"help": "Excel sheet: its name, or its position from 1 (default: the first)."}),
    ("--timezone", "input.timezone", {"help": "Time zone of date-times written without an offset (default UTC)."}),
    ("--default-country", "input.default_country",
     {"metavar": "CC", "help": "Mobiles in any format are sent as country code + number (ISO code, e.g. IN)."}),
    ("--date-order", "input.date_order",
     {"type": click.Choice(["YMD", "DMY", "MDY"], case_sensitive=False),
      "help": "How dates are written: YMD (ISO, default), DMY (17/05/1990) or MDY (05/17/1990)."}),
    ("--max-invalid", "input.max_invalid",
     {"metavar": "N|N%", "help": "Send nothing (exit 2) when more rows than this are invalid."}),
    ("--duplicates", "input.duplicates",
     {"type": click.Choice(["sequential", "last", "reject"]),
      "help": "Several rows for one customer: send all in order (default), the last, or none."}),
    ("--ca-bundle", "api.ca_bundle",
     {"type": click.Path(dir_okay=False),
      "help": "PEM file of CA certificates to trust for the API (a private CA or TLS proxy)."}),
    ("--insecure", "api.verify_tls", {"is_flag": True, "flag_value": False, "default": None,
                                      "help": "Do not verify the API's TLS certificate (warns; prefer --ca-bundle)."}),
    ("--metrics-file", "output.metrics_file",
     {"type": click.Path(dir_okay=False),
      "help": "Write the run's Prometheus metrics here (textfile collector), every 30 s and at the end."}),
    ("--job-name", "output.job_name", {"help": "The metrics' job label (default: the input file's stem)."}),
    ("--mask-identifiers", "output.mask_identifiers",
     {"is_flag": True, "flag_value": True, "default": None,
      "help": "Mask identifiers in success.csv and skipped.csv (errors.csv stays re-feedable)."}),
    ("--min-rows", "input.min_rows",
     {"type": int, "metavar": "N",
      "help": "Send nothing (exit 2) when the file has fewer data rows: a broken export."}),
    ("--fail-on-warnings", "api.fail_on_warnings",
     {"is_flag": True, "flag_value": True, "default": None,
      "help": "An update applied with API warnings counts as an error (errors.csv, exit 1)."}),
    ("--already-enrolled", "api.already_enrolled",
     {"type": click.Choice(["error", "success"]),
      "help": "An enrolment the customer already has: an error (default) or a success with a warning."}),
]
# Options that only matter when requests go out: `validate` does not show them.
SENDING_ONLY = {"--base-url", "--auth", "--username", "--rate-per-minute", "--create-rate-per-minute",
                "--metrics-file", "--job-name",
                "--concurrency", "--timeout-seconds",
                "--max-attempts", "--ca-bundle", "--insecure", "--fail-on-warnings", "--already-enrolled"}
# What `check` uses: where the API is and who we are to it.
CHECK_OPTIONS = {"--base-url", "--source", "--account-id", "--identifier-name", "--auth", "--username",
                 "--timeout-seconds", "--ca-bundle", "--insecure", "--output-dir"}


def _option_name(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _setting_options(wanted=lambda flag: True):
    """The --config option and the SETTING_OPTIONS whose flag is `wanted`."""
    def decorate(f):
        for flag, _, settings in reversed(SETTING_OPTIONS):  # the last applied is listed first
            if wanted(flag):
                f = click.option(flag, _option_name(flag), **settings)(f)
        return click.option("--config", "config_path", type=click.Path(dir_okay=False),
                            help="TOML config file.")(f)
    return decorate


_connection_options = _setting_options()


def _output_options(f):
    options = [
        click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout."),
        click.option("--quiet", is_flag=True, help="No progress, no summary, no info logs; warnings and errors only."),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                     default="info", show_default=True, help="Log detail (logs go to stderr)."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                     show_default=True, help="json: one object per line, with run and job ids."),
        click.option("--log-file", type=click.Path(dir_okay=False), help="Write logs here instead of stderr."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _overrides(options: dict) -> dict[str, Any]:
    overrides: dict[str, Any] = {key: options.get(_option_name(flag)) for flag, key, _ in SETTING_OPTIONS}
    overrides["state.only_changed"] = options.get("only_changed")
    return overrides


def _load(options: dict, shard=None, sending: bool = True):
    from .config import load_config
    from .input.shards import ADD_LIMIT, UPDATE_LIMIT, shard_limits

    config = load_config(options.get("config_path"), overrides=_overrides(options), sending=sending)
    for warning in config.warnings:
        click.echo(f"batch-updater: warning: {warning}", err=True)
    # A limit given on the command line with --shard is the shard's own.
    given = [key for key, option in ((UPDATE_LIMIT, "rate_per_minute"), (ADD_LIMIT, "create_rate_per_minute"))
             if options.get(option) is not None]
    return shard_limits(config, shard, given)


@main.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_connection_options
@click.option("--dry-run", is_flag=True, help="Validate and map only; write errors.csv and preview.jsonl.")
@click.option("--resume/--restart", default=True,
              help="Continue this file's unfinished job (default), or start it over.")
@click.option("--retry-failed", is_flag=True,
              help="Also send again the rows the API refused in earlier runs of this job (after fixing their cause).")
@click.option("--max-runtime", metavar="DURATION", help="Stop cleanly after e.g. 90m, 6h, 1h30m (exit 4; resumable).")
@click.option("--only-changed/--full", "only_changed", default=None,
              help="Skip rows the API already acknowledged with the same values / send all and refresh the state.")
@click.option("--shard", metavar="K/N",
              help="Only the customers of shard K of N; it gets its share of each rate limit unless given.")
@_output_options
def run(file: str, dry_run: bool, resume: bool, retry_failed: bool, max_runtime: str | None,
        only_changed: bool | None, shard: str | None,
        as_json: bool, quiet: bool, log_level: str, log_format: str, log_file: str | None,
        **options) -> None:
    """Send every row of FILE to the API and write success, error and skipped reports.

    Running the same file with the same settings again resumes where it stopped: it
    sends the rows not sent yet and those that failed for the run's reason (credentials,
    network, API errors 5xx/429); a job with nothing left to send prints its summary again.
    """
    def work():
        from .input.shards import Shard

        if retry_failed and dry_run:
            raise UsageError("--retry-failed sends rows again; it cannot go with --dry-run")
        seconds = parse_duration(max_runtime) if max_runtime else None
        parsed = Shard.parse(shard) if shard else None
        config = _load({**options, "only_changed": only_changed}, shard=parsed, sending=not dry_run)
        display = _progress_display(quiet or as_json)
        level = "warning" if quiet and log_level == "info" else log_level  # --quiet: errors and warnings only
        _setup_logging(config, level, log_format, log_file, before_emit=display.clear)
        try:
            return _run_file(config, file, dry_run=dry_run, restart=not resume, retry_failed=retry_failed,
                             max_runtime_seconds=seconds, shard=parsed,
                             on_progress=display.show, progress_every=display.interval)
        finally:
            display.close()

    summary = _guarded(work)
    _report(summary, as_json, quiet)
    sys.exit(summary.exit_code)


def _progress_display(quiet: bool):
    from .output.logs import log
    from .output.progress import ProgressDisplay

    terminal = sys.stdout.isatty() and sys.stderr.isatty()
    return ProgressDisplay(stream=sys.stderr, quiet=quiet, terminal=terminal, log=log.info)


def _setup_logging(config, level: str, fmt: str, file: str | None, before_emit=None) -> None:
    from .output.logs import setup_logging

    setup_logging(level, fmt, file, secret=config.api.password.reveal(), before_emit=before_emit)


def _run_file(config, file: str, **run_options):
    from .runner import run as run_file

    return run_file(config, file, **run_options)


def parse_duration(text: str) -> float:
    """'90', '90s', '45m', '6h', '1h30m', '1d' -> seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    matches = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms]?)", text.strip().lower())
    if not matches or re.sub(r"[\d.\sdhms]", "", text.lower()):
        raise UsageError(f"--max-runtime {text!r}: expected a duration such as 90m, 6h or 1h30m")
    seconds = sum(float(n) * units[u or "s"] for n, u in matches)
    if seconds <= 0:
        raise UsageError(f"--max-runtime {text!r}: must be longer than zero")
    return seconds


@main.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_setting_options(lambda flag: flag not in SENDING_ONLY)
@_output_options
def validate(file: str, as_json: bool, quiet: bool, log_level: str, log_format: str,
             log_file: str | None, **options) -> None:
    """Check FILE against the schema and mapping without sending (same as run --dry-run).

    Needs no password, base URL or username: a file can be checked on a laptop."""
    def work():
        config = _load(options, sending=False)
        _setup_logging(config, log_level, log_format, log_file)
        return _run_file(config, file, dry_run=True)

    summary = _guarded(work)
    _report(summary, as_json, quiet)
    sys.exit(1 if summary.errors else 0)


def _report(summary, as_json: bool, quiet: bool) -> None:
    from .summary import human_summary

    if as_json:
        click.echo(summary.to_json().decode())
    elif not quiet:
        click.echo(human_summary(summary))



@main.command()
@_setting_options(CHECK_OPTIONS.__contains__)
def check(config_path: str | None, **options) -> None:
    """Check the setup before a run: config, password, DNS, port, TLS, credentials.

    One line per step: the config, the password (found, never shown), DNS, the port, TLS,
    the credentials (one harmless lookup: nothing is changed) and the API's answer time.
    Exit 0 when every step passes, 3 otherwise. Cron runs it before the nightly run."""
    import logging

    from .check import check_setup

    logging.getLogger("batch_updater").addHandler(logging.NullHandler())  # every finding is a step's line
    steps = _guarded(lambda: check_setup(config_path, _overrides(options)))
    for step in steps:
        click.echo(step.line())
    sys.exit(0 if all(step.ok for step in steps) else 3)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file (its output dir).")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Where the jobs are (default from config).")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def jobs(config_path: str | None, output_dir: str | None, as_json: bool) -> None:
    """List the jobs in the output folder, the newest run first: file, job id, status,
    rows, updated, errors, last run and exit code. Each job folder's `latest` link is its
    newest run; the output folder's `latest` link, the newest run of any job."""
    def work():
        from .state.stores import job_records

        config = _state_config(config_path, output_dir)
        return config.output.url, *job_records(config)

    url, folder, records = _guarded(work)
    if as_json:
        from dataclasses import asdict

        import orjson

        click.echo(orjson.dumps([asdict(r) for r in records], option=orjson.OPT_INDENT_2).decode())
        return
    if not records:
        where = folder if folder.startswith("PostgreSQL ") else f"{folder}/"
        if url and not folder.startswith("PostgreSQL "):
            where += f" (the staging folder of {url}: the jobs run on this machine; with [state] url, every worker's)"
        click.echo(f"no jobs in {where} (pass --config or --output-dir for another folder)")
        return
    click.echo(_table(["file", "job", "status", "rows", "updated", "errors", "last run", "exit"],
                      [[_file_label(r), r.job_id, r.status, _count(r.rows), _count(r.success),
                        _count(r.errors), r.last_run.removeprefix("run-") or "-",
                        "-" if r.exit_code is None else str(r.exit_code)] for r in records]))


def _file_label(record) -> str:
    """The input's name, and its shard when the job is one: 'night.csv (shard 1/2)'."""
    from .state.jobs import shard_of

    shard = shard_of(Path(record.folder).name)
    return Path(record.input).name + (f" (shard {shard})" if shard else "")


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [header, *rows])


@main.group()
def state() -> None:
    """The store behind --only-changed: what the API last acknowledged per customer."""


@state.command("stats")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Where the default store lives.")
def state_stats(config_path: str | None, output_dir: str | None) -> None:
    """How many customers the store knows, and when it last changed."""
    def work():
        from .state.stores import open_sync_state

        with open_sync_state(_state_config(config_path, output_dir)) as store:
            return store.stats()

    stats = _guarded(work)
    click.echo(f"{stats['path']}: {stats['customers']} customers;"
               f" oldest entry {stats['oldest'] or '-'}, newest {stats['newest'] or '-'}")


@state.command("forget")
@click.argument("identifiers", nargs=-1)
@click.option("--all", "forget_all", is_flag=True, help="Forget every customer: the next run sends everything.")
@click.option("--identifier-name", help="What the IDENTIFIERS are (default from config).")
@click.option("--source", help="Source of the IDENTIFIERS (default from config).")
@click.option("--account-id", help="Account id of the IDENTIFIERS (default from config).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Where the default store lives.")
def state_forget(identifiers, forget_all, identifier_name, source, account_id, config_path, output_dir) -> None:
    """Forget customers (or --all), so that the next --only-changed run sends them."""
    if bool(identifiers) == forget_all:
        _fail("name the customers' identifiers, or pass --all (not both)", 2)

    def work():
        from .state.stores import open_sync_state
        from .state.sync_state import Fingerprints

        config = _state_config(config_path, output_dir)
        if not config.api.base_url and not forget_all:
            raise UsageError("the store's keys depend on the API's address: give --config (or"
                             " BATCH_UPDATER_API_BASE_URL) with the [api] base_url of the runs")
        with open_sync_state(config) as store:
            if forget_all:
                return store.forget_all()
            fingerprints = Fingerprints([], config)
            name = identifier_name or config.api.identifier_name
            keys = [fingerprints.key_of(name, _as_sent(name, value.strip(), config), source, account_id)
                    for value in identifiers]
            return store.forget_keys(keys)

    forgotten = _guarded(work)
    click.echo(f"forgot {forgotten} customers")


def _as_sent(identifier_name: str, value: str, config) -> str:
    """An identifier as runs send it, so it names the same customer in the store: a mobile in
    any format, under [input] default_country, as country code + number."""
    value = value.strip().removeprefix("'")  # as copied from a report, where a leading + is neutralised
    if identifier_name.lower() != "mobile" or not config.input.default_country or not value:
        return value
    from .rows.phones import MobileNumbers, NotAMobile

    try:
        return MobileNumbers(config.input.default_country).normalise(value)
    except NotAMobile as exc:
        raise UsageError(f'"{value}" {exc}: nothing was forgotten') from None


def _state_config(config_path: str | None, output_dir: str | None):
    from .config import load_config

    # The store needs the API's address, not credentials.
    return load_config(config_path, overrides={"output.dir": output_dir}, sending=False)


@main.command()
@click.argument("folders", nargs=-1, required=True)
@click.option("--output-dir", required=True, help="Where the merged reports go (a folder or an s3:// URL).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config file (its [storage] settings, for URLs).")
@click.option("--json", "as_json", is_flag=True, help="Print the merged summary to stdout.")
def merge(folders: tuple[str, ...], output_dir: str, config_path: str | None, as_json: bool) -> None:
    """Combine the reports of every shard of a job (run folders, or job folders: their
    latest run; local or on object storage) into one success.csv, errors.csv, skipped.csv
    and summary.json."""
    from .output.merge import merge_reports
    from .output.publish import write_report_page
    from .output.upload import merge_locations

    def work():
        settings = _state_config(config_path, None).storage
        with merge_locations(folders, output_dir, settings, _latest_run) as (runs, local):
            merged = merge_reports(runs, local)
            write_report_page(local)
        return merged, len(runs)

    merged, count = _guarded(work)
    if as_json:
        import orjson
        click.echo(orjson.dumps(merged, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(f"{merged['rows']} rows from {count} shards: {merged['success']} updated,"
                   f" {merged['errors']} errors, {merged['skipped']} skipped -> {output_dir}")
    sys.exit(merged["exit_code"])


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
def report(folder: str) -> None:
    """Build report.html again for FOLDER: a run folder, a job folder (its latest run), an
    output folder (the latest run of any job) or the folder of merged shards. The page
    has the headline, charts per minute, the errors by cause, the settings and the runs
    of the job; it opens offline in a browser."""
    from .output.html_report import write_report_html

    click.echo(_guarded(lambda: write_report_html(Path(folder))))


def _latest_run(folder: Path) -> Path:
    if not folder.is_dir():
        _fail(f"{folder}: no such folder", 2)
    if (folder / "summary.json").exists():
        return folder
    runs = sorted(folder.glob("run-*/summary.json"))
    if not runs:
        _fail(f"{folder}: no run folder with a summary.json inside", 2)
    return runs[-1].parent


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8720, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--customers", default=10_000, show_default=True, type=int, help="Seeded customers.")
@click.option("--customers-csv", type=click.Path(exists=True, dir_okay=False), help="Load customers from a CSV.")
@click.option("--rate-limit", type=int, help="Strict rolling-window limit per credential.")
@click.option("--create-rate-limit", type=int,
              help="Strict rolling-window limit per credential for adds (POST /v2/customers), apart from --rate-limit.")
@click.option("--rate-window", default=60.0, show_default=True, type=float,
              help="Window of --rate-limit and --create-rate-limit, seconds.")
@click.option("--latency-ms", default=0.0, show_default=True, type=float, help="Added to every answer.")
@click.option("--token-ttl", default=300.0, show_default=True, type=float, help="OAuth token lifetime, seconds.")
@click.option("--fault-5xx", default=0.0, show_default=True, type=float, help="Share of 502/503/504 answers.")
@click.option("--fault-drop", default=0.0, show_default=True, type=float, help="Share of dropped connections.")
@click.option("--no-record", is_flag=True, help="Do not keep the request record (long benchmarks).")
def sandbox(host, port, customers, customers_csv, rate_limit, create_rate_limit, rate_window, latency_ms, token_ttl,
            fault_5xx, fault_drop, no_record) -> None:
    """Run the built-in Capillary-compatible API server (for demos, tests and benchmarks).

    \b
    It seeds --customers N customers; customer i (0 <= i < N) has
      mobile      9198 and i in 8 digits: 919800000000 ... 919800009999 (N = 10,000)
      email       customer<i>@example.com: customer0@example.com ... customer9999@example.com
      externalId  EXT and i in 8 digits: EXT00000000 ... EXT00009999
    (or the customers of --customers-csv). The org has the extended fields city, gender
    and dateOfBirth, the custom fields preferred_language and newsletter, and the
    programs 699 and 700. Basic login: till code "demo.till", password "demo-password";
    OAuth: key "demo-key", secret "demo-secret" (it prints them too).
    """
    from .sandbox import Faults, RateLimit, SandboxSettings, serve

    third = fault_5xx / 3
    settings = SandboxSettings(
        host=host, port=port, customers=customers, customers_csv=customers_csv,
        rate_limit=RateLimit(rate_limit, rate_window) if rate_limit else None,
        create_rate_limit=RateLimit(create_rate_limit, rate_window) if create_rate_limit else None,
        latency_seconds=latency_ms / 1000, token_ttl_seconds=token_ttl, record=not no_record,
        faults=Faults(error_502=third, error_503=third, error_504=third, drop_before=fault_drop),
    )
    serve(settings)


@main.command()
@click.option("--output-dir", default="demo-output", show_default=True, type=click.Path(file_okay=False))
def demo(output_dir: str) -> None:
    """Run the sample file against an in-process sandbox: no credentials, no network."""
    from .summary import human_summary

    summary = _guarded(lambda: _demo(Path(output_dir)))
    click.echo(human_summary(summary))
    worked = summary.status in ("completed", "completed_with_errors") and summary.success > 0
    click.echo("demo: OK (the rows in errors.csv are rejected on purpose)" if worked else "demo: FAILED")
    sys.exit(0 if worked else 1)


def _demo(output_dir: Path):
    from .config import load_config
    from .runner import run as run_file
    from .sandbox import SandboxSettings, SandboxThread

    sample = _sample_path()
    settings = SandboxSettings()
    with SandboxThread(settings) as server:
        click.echo(f"sandbox listening on {server.url}")
        overrides = {"api.base_url": server.url, "api.username": settings.till_code,
                     "limits.rate_per_minute": 1200, "output.dir": str(output_dir)}
        config = load_config(None, overrides=overrides,
                             environ={"BATCH_UPDATER_PASSWORD": settings.password})
        return run_file(config, sample)


def _sample_path() -> Path:
    for folder in (Path(__file__).resolve().parent.parent / "samples", Path.cwd() / "samples"):
        if (folder / DEMO_SAMPLE).is_file():
            return folder / DEMO_SAMPLE
    raise BatchUpdaterError(f"samples/{DEMO_SAMPLE} not found: run the demo from the project folder")


if __name__ == "__main__":  # pragma: no cover
    main()
