"""The password or OAuth secret never shows: not in logs at any level, reports, summary.json,
journals, messages, --help or the process's command line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import customer_puts, mobile, write_config, write_csv

from batch_updater.cli import main
from batch_updater.sandbox import SandboxSettings

SECRET = "Zq9!sEcr3t-4fB7xK"
WRONG = "Wr0ng!Zq9-pa55wd"
TILL = SandboxSettings().till_code
OAUTH_KEY = SandboxSettings().oauth_key


def forms(secret: str, username: str = TILL) -> list[str]:
    """The secret and what can be derived from it: Capillary's MD5, the Basic header value."""
    digest = hashlib.md5(secret.encode()).hexdigest()
    header = base64.b64encode(f"{username}:{digest}".encode()).decode()
    return [secret, digest, header, base64.b64encode(secret.encode()).decode()]


def assert_nowhere(secrets: list[str], texts: dict[str, str | bytes]) -> None:
    for where, text in texts.items():
        data = text.encode() if isinstance(text, str) else text
        for secret in secrets:
            assert secret.encode() not in data, f"{secret!r} found in {where}"


def every_file(folder: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def source_file(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "in.csv", ["identifierValue", "firstName", "commChannels.email.value"], [
        [mobile(1), "Asha", "asha@example.com"],
        [mobile(2), "Ravi", "bob@"],                    # invalid: errors.csv
        ["919999999999", "Nobody", ""],                 # unknown customer: refused by the API
    ])


def test_a_debug_run_in_a_subprocess_shows_the_secret_nowhere(tmp_path, sandbox_server):
    server = sandbox_server(password=SECRET)
    config = write_config(tmp_path, server.url, password=SECRET)
    log_file = tmp_path / "run.log"
    command = [sys.executable, "-m", "batch_updater.cli", "run", str(source_file(tmp_path)),
               "--config", str(config), "--log-level", "debug", "--log-file", str(log_file), "--json"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_UPDATER_")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ,
                               cwd=Path(__file__).resolve().parent.parent)
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()  # what `ps` shows
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 1, stderr.decode()
    summary = json.loads(stdout)
    assert (summary["success"], summary["errors"]) == (1, 2)
    assert b" DEBUG " in log_file.read_bytes()
    # The forms searched for are the ones that went over the wire.
    assert {r.headers["Authorization"] for r in customer_puts(server)} == {"Basic " + forms(SECRET)[2]}
    assert_nowhere(forms(SECRET), {"stdout": stdout, "stderr": stderr, "log file": log_file.read_bytes(),
                                   "command line": cmdline, **every_file(tmp_path / "out")})


def test_a_refused_password_is_not_echoed(tmp_path, sandbox_server):
    server = sandbox_server(password=SECRET)
    config = write_config(tmp_path, server.url, password=WRONG, limits={"auth_failures_to_abort": 1})
    log_file = tmp_path / "run.log"
    result = CliRunner().invoke(main, ["run", str(source_file(tmp_path)), "--config", str(config),
                                       "--log-level", "debug", "--log-file", str(log_file)])
    assert result.exit_code == 3, result.output
    assert "aborted: the API refused the credentials" in result.stdout
    assert_nowhere(forms(WRONG) + forms(SECRET),
                   {"output": result.output, "log file": log_file.read_bytes(),
                    **every_file(tmp_path / "out")})


def test_oauth_runs_show_neither_the_secret_nor_the_token(tmp_path, sandbox_server):
    server = sandbox_server(oauth_secret=SECRET)
    config = write_config(tmp_path, server.url, password=None, api={"auth": "oauth", "username": OAUTH_KEY})
    runner = CliRunner()
    good = runner.invoke(main, ["run", str(source_file(tmp_path)), "--config", str(config),
                                "--log-level", "debug", "--log-format", "json"],
                         env={"BATCH_UPDATER_PASSWORD": SECRET})
    assert good.exit_code == 1, good.output
    tokens = list(server.state.auth._tokens)
    assert tokens

    bad = runner.invoke(main, ["run", str(source_file(tmp_path)), "--config", str(config), "--restart",
                               "--log-level", "debug"], env={"BATCH_UPDATER_PASSWORD": WRONG})
    assert bad.exit_code == 3, bad.output
    assert "OAuth token request refused (HTTP 401)" in bad.stderr
    assert_nowhere(forms(SECRET, OAUTH_KEY) + forms(WRONG, OAUTH_KEY) + tokens,
                   {"good run": good.output, "bad run": bad.output, **every_file(tmp_path / "out")})


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    yield path, group
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def test_no_help_shows_the_secret_and_no_option_takes_it(tmp_path):
    commands = list(_commands(main))
    assert {path for path, _ in commands} >= {(), ("run",), ("validate",), ("merge",), ("sandbox",), ("demo",)}
    for path, command in commands:
        result = CliRunner().invoke(main, [*path, "--help"], env={"BATCH_UPDATER_PASSWORD": SECRET})
        assert result.exit_code == 0, (path, result.output)
        assert SECRET not in result.output
        for param in command.params:
            assert not {"password", "secret"} & set(param.name.split("_")), (path, param.name)


def test_a_config_file_with_a_password_readable_by_others_gets_a_warning(tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:9", password=None, api={"password": SECRET})
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    config.chmod(0o644)
    shared = CliRunner().invoke(main, ["validate", str(source), "--config", str(config)], env={})
    assert shared.exit_code == 0, shared.output
    assert (f"batch-updater: warning: {config} holds a password and is readable by other users:"
            f" run chmod 600 {config}\n") in shared.stderr
    config.chmod(0o600)
    private = CliRunner().invoke(main, ["validate", str(source), "--config", str(config)], env={})
    assert private.exit_code == 0 and "warning" not in private.stderr
    assert_nowhere(forms(SECRET), {"shared": shared.output, "private": private.output,
                                   **every_file(tmp_path / "out")})


@pytest.mark.parametrize("section", [{"api": {"proxy": f"http://ops:{SECRET}@proxy:3128"}},
                                     {"state": {"url": f"postgresql://batch:{SECRET}@db/jobs"}}])
def test_a_config_file_with_a_password_in_a_url_readable_by_others_gets_a_warning(tmp_path, section):
    config = write_config(tmp_path, "http://127.0.0.1:9", **section)
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    config.chmod(0o644)
    shared = CliRunner().invoke(main, ["validate", str(source), "--config", str(config)], env={})
    assert f"{config} holds a password and is readable by other users" in shared.stderr
    assert SECRET not in shared.output
