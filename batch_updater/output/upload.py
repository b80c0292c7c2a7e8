"""Reports bound for object storage: written to a local staging folder as always, then
uploaded when the run ends, whatever its end (finished, stopped, aborted), with a
`latest.json` pointer beside the job folders. A crash loses the upload, never more than
the local copy holds: the next run of the job uploads its own reports.

Also the other way, for `merge`: run folders on storage fetched into a local folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson

from ..config import Config, StorageSettings
from ..errors import InputError
from ..storage import filesystem, is_url, join, scheme, storage_errors
from .logs import log

LATEST = "latest.json"
NOT_UPLOADED = ("journal.sqlite", "lock")  # the job's state stays on the machine that runs it
RUN_FILES = ("summary.json", "success.csv", "errors.csv", "skipped.csv")
# s3fs sends a file under 100 MiB in one request read whole, a larger one in 10 parts of
# 50 MiB at once: the reports of a million rows would cost the run's memory several times
# over. Parts of 16 MiB, two at a time, keep an upload's memory small (up to 160 GiB a file).
PUT_OPTIONS = {"s3": {"chunksize": 16 << 20, "max_concurrency": 2}}


def upload_run(config: Config, run_folder: Path, *, latest: bool = True, unless_there: bool = False) -> str | None:
    """Copy `run_folder` (a folder of the staging folder) to [output] dir's URL; with
    `latest`, point <url>/latest.json at it; with `unless_there`, not when its summary.json
    is there already (a replay: only an upload that failed then is made again). Returns the
    run's URL (None: no URL set, or nothing to do)."""
    url = config.output.url
    if not url or not run_folder.is_dir():
        return None
    target = run_url(url, run_folder)
    fs = filesystem(url, config.storage)
    with storage_errors(url):
        if unless_there and fs.exists(join(target, "summary.json")):
            return None
        _put_files(fs, [path for path in sorted(run_folder.iterdir())
                        if not path.is_symlink() and not path.name.startswith(NOT_UPLOADED)], target)
        if latest and _newer_than_latest(fs, url, run_folder.name):
            pointer = {"run": target, "summary": join(target, "summary.json"), "job": run_folder.parent.name,
                       "uploaded": datetime.now(UTC).isoformat(timespec="seconds")}
            fs.pipe_file(join(url, LATEST), orjson.dumps(pointer, option=orjson.OPT_INDENT_2))
    log.info("reports uploaded to %s", target)
    return target


def run_url(url: str, run_folder: Path) -> str:
    """Where a run folder of the staging folder goes: <url>/<job folder>/<run folder>."""
    return join(url, run_folder.parent.name, run_folder.name)


def _put_files(fs, paths: Sequence[Path], target: str) -> None:
    for path in paths:
        if path.is_file():
            fs.put_file(str(path), join(target, path.name), **PUT_OPTIONS.get(scheme(target), {}))


def _newer_than_latest(fs, url: str, run_name: str) -> bool:
    """latest.json only moves forward: a replay's upload of yesterday's run, or a shard that
    ends after a newer run of another, leaves it alone. Run folders are named by their start
    time (run-<UTC time>), so their names sort as their times."""
    try:
        named = orjson.loads(fs.cat_file(join(url, LATEST)))["run"].rstrip("/").rsplit("/", 1)[-1]
    except FileNotFoundError:
        return True
    except (ValueError, KeyError, TypeError, AttributeError):
        return True  # not a pointer this tool wrote: replace it
    return run_name >= named


def upload_after_failure(config: Config, run_folder: Path) -> None:
    """A run that failed uploads what it has; a failing upload then is a warning, so that
    the run's own error is the one reported. latest.json moves only to whole reports (the
    summary is written after them), as the local `latest` link does."""
    try:
        upload_run(config, run_folder, latest=(run_folder / "summary.json").is_file())
    except Exception as exc:
        log.warning("%s", exc)


def upload_folder(folder: Path, url: str, settings: StorageSettings) -> None:
    """Every file of `folder` (merged reports) into `url`."""
    fs = filesystem(url, settings)
    with storage_errors(url):
        _put_files(fs, sorted(folder.iterdir()), url)


def fetch_run(url: str, settings: StorageSettings, into: Path) -> Path:
    """A run folder's reports (or a job folder's latest run's) copied into a new folder of
    `into`, for `merge`."""
    fs = filesystem(url, settings)
    with storage_errors(url, missing=InputError):
        run = url.rstrip("/")
        if not fs.exists(join(run, "summary.json")):
            runs = sorted(fs.glob(join(run, "run-*/summary.json")))
            if not runs:
                raise InputError(f"{url}: no run folder with a summary.json inside")
            run = f"{url.split('://', 1)[0]}://{runs[-1].rsplit('/', 1)[0]}"
        local = Path(tempfile.mkdtemp(prefix="run-", dir=into))
        for name in RUN_FILES:
            if fs.exists(join(run, name)):
                fs.get_file(join(run, name), str(local / name))
    return local


@contextmanager
def merge_locations(folders: Sequence[str], output: str, settings: StorageSettings,
                    latest_run) -> Iterator[tuple[list[Path], Path]]:
    """Local run folders for `folders` (URLs fetched into a temporary folder; local ones
    through `latest_run`) and a local output folder for `output` (uploaded at the end when
    it is a URL)."""
    with tempfile.TemporaryDirectory(prefix="batch-updater-merge-") as scratch:
        runs = [fetch_run(folder, settings, Path(scratch)) if is_url(folder) else latest_run(Path(folder))
                for folder in folders]
        local = Path(scratch) / "merged" if is_url(output) else Path(output)
        yield runs, local
        if is_url(output):
            upload_folder(local, output, settings)
