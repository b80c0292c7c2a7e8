"""A throwaway PostgreSQL cluster for the tests: Debian's binaries, a temporary folder, a
free 127.0.0.1 port, password authentication (scram). Run as root, the server runs as the
`postgres` user (PostgreSQL refuses root). Without the binaries the tests that need it are
skipped, unless BATCH_UPDATER_REQUIRE_POSTGRES=1 (CI), which makes that a failure."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

USER, PASSWORD = "batch", "s3cret-Pg!pass"
SUPERUSER_PASSWORD = "super-s3cret"
_numbers = itertools.count(1)


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


class PgCluster:
    def __init__(self, binaries: Path, folder: Path):
        self.folder, self.port = folder, _free_port()
        self._bin = binaries
        data, secret = folder / "data", folder / "superuser-password"
        secret.write_text(SUPERUSER_PASSWORD)
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
            shutil.chown(secret, "postgres")
        self._run([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                   f"--pwfile={secret}", "-E", "UTF8", "--no-sync"])
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {folder} -c fsync=off"
        self._run([str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
                   "-w", "start"])
        self._data = data
        with self.admin() as db:
            db.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")

    def _run(self, command: list[str]) -> None:
        subprocess.run(_as_owner(command), check=True, capture_output=True, cwd=self.folder)

    def admin(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=SUPERUSER_PASSWORD,
                               dbname=database, autocommit=True)

    def new_database(self) -> str:
        """A fresh database owned by USER; its URL, without the password."""
        name = f"jobs{next(_numbers)}_{os.getpid()}"
        with self.admin() as db:
            db.execute(f"CREATE DATABASE {name} OWNER {USER}")
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        self._run([str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "stop"])


def start_cluster():
    """A started cluster, or a skip (a failure when BATCH_UPDATER_REQUIRE_POSTGRES=1)."""
    binaries = _binaries()
    problem = None
    if binaries is None:
        problem = "PostgreSQL's binaries (/usr/lib/postgresql/*/bin/initdb) are not installed"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            problem = "psycopg is not installed (pip install -e '.[test]')"
    if problem:
        if os.environ.get("BATCH_UPDATER_REQUIRE_POSTGRES") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    folder = Path(tempfile.mkdtemp(prefix="bu-pg-"))
    folder.chmod(0o755)
    assert binaries is not None
    return PgCluster(binaries, folder)


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)
