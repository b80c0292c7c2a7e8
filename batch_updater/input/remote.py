"""An input on object storage, streamed: a background thread spools the object to a
private local file while the readers read what has arrived.

A reader that reaches the end of what has arrived waits there until more comes or the
spool is complete, so the first request goes out long before a large object is down. The
readers read a file more than once (the reports read the input again); the later passes
read the local copy. A workbook is a zip read from its end: it is read once the spool is
complete. The job identity is the object's version (ETag) and size (storage.Origin), known
from one metadata request, before the download ends.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from ..config import Config
from ..errors import InputError
from ..storage import Origin, describe, filesystem, storage_errors
from .csv_file import SNIFF_BYTES
from .reader import _reason, is_excel
from .stdin import sweep

BLOCK = 1 << 20
SPOOL_PREFIX = ".remote"


class Spool:
    """Copies one object into `path` in a background thread; `arrived` bytes so far."""

    def __init__(self, url: str, fs: Any, path: Path):
        self.url, self.path = url, path
        self.arrived = 0
        self.complete = False
        self.error: BaseException | None = None
        self.cancelled = False  # the run ended first: stop downloading
        self._changed = threading.Condition()
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"):
            pass  # the readers open the file at once
        self._thread = threading.Thread(target=self._copy, args=(fs,), name="spool", daemon=True)
        self._thread.start()

    def _copy(self, fs: Any) -> None:
        try:
            with storage_errors(self.url, missing=InputError), fs.open(self.url, "rb", block_size=BLOCK) as source, \
                    open(self.path, "ab") as out:
                while not self.cancelled and (block := source.read(BLOCK)):
                    out.write(block)
                    out.flush()
                    with self._changed:
                        self.arrived += len(block)
                        self._changed.notify_all()
        except BaseException as exc:  # handed to the reader, which raises it in its own thread
            self.error = exc
        finally:
            with self._changed:
                self.complete = True
                self._changed.notify_all()

    def wait_for(self, size: int) -> bool:
        """Wait until more than `size` bytes arrived or the spool is complete; True if more may come."""
        with self._changed:
            while self.arrived <= size and not self.complete:
                self._changed.wait(1.0)
            if self.error is not None:
                raise self.error
            return self.arrived > size

    def wait(self) -> None:
        """Until the whole object is here."""
        while self.wait_for(self.arrived):
            pass

    def open(self) -> BinaryIO:
        # Unbuffered: a buffered read(n) would wait for n bytes; pandas reads 256 KiB at a
        # time and takes what has arrived.
        return cast(BinaryIO, _Following(self))

    def cancel(self) -> None:
        self.cancelled = True
        self._thread.join(5)


class _Following(io.RawIOBase):
    """The spool file read as it grows: at the end of what has arrived, wait for more."""

    def __init__(self, spool: Spool):
        self._spool = spool
        self._file = open(spool.path, "rb")  # noqa: SIM115 - closed in close()
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            count = self._file.readinto(buffer) or 0
            if count:
                self._position += count
                return count
            if not self._spool.wait_for(self._position):
                count = self._file.readinto(buffer) or 0  # what came with the last notice
                self._position += count
                return count

    def close(self) -> None:
        self._file.close()
        super().close()


@dataclass
class RemoteInput:
    path: Path                 # the local copy, named as the object
    origin: Origin
    opener: Callable[[], BinaryIO] | None  # a reader that follows the spool; None: read `path`
    spool: Spool


@contextmanager
def remote_input(url: str, config: Config) -> Iterator[RemoteInput]:
    """Start spooling `url` into a private folder of the output folder; removed on exit."""
    fs = filesystem(url, config.storage)
    origin = describe(url, fs)
    folder = Path(config.output.dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sweep(folder, SPOOL_PREFIX)
        private = Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}-{os.getpid()}-", dir=folder))
    except OSError as exc:
        raise InputError(f"cannot create a folder for {url} in {folder} ({_reason(exc)})") from None
    spool: Spool | None = None
    try:
        spool = Spool(url, fs, private / (origin.name or "input"))
        # The readers judge a file by its first bytes (a short read would cut a character)
        spool.wait_for(min(origin.size, SNIFF_BYTES) - 1)
        if is_excel(spool.path):
            spool.wait()
            yield RemoteInput(spool.path, origin, None, spool)
        else:
            yield RemoteInput(spool.path, origin, spool.open, spool)
    except InputError as exc:  # name the URL, not a temporary file that is gone
        raise InputError(str(exc).replace(str(private / (origin.name or "input")), url)) from None
    finally:
        if spool is not None:
            spool.cancel()
        shutil.rmtree(private, ignore_errors=True)
