"""TLS: verified by default, a CA bundle option, and verification off only when asked, with a warning.

The end-to-end cases serve the sandbox over HTTPS on 127.0.0.1 with a self-signed
certificate made by the openssl command (skipped where it is missing).
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner
from conftest import ServerThread, customer_puts, mobile, write_config, write_csv

from batch_updater.cli import main
from batch_updater.config import INSECURE_WARNING, load_config
from batch_updater.sandbox import SandboxSettings, make_app
from batch_updater.send.client import ApiClient
from batch_updater.send.tls import ssl_argument


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


class HttpsSandbox(ServerThread):
    """The sandbox app served over TLS from a background thread."""

    def __init__(self, cert: Path, key: Path):
        super().__init__()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.app = make_app(SandboxSettings(customers=100))
        self.state = self.app["state"]

    async def _serve(self) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.context).start()
        self.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
        await self._serving()
        await runner.cleanup()


@pytest.fixture
def https_sandbox(certificate):
    with HttpsSandbox(*certificate) as server:
        yield server


def config_file(tmp_path: Path, url: str, **api) -> Path:
    return write_config(tmp_path, url, api=api, limits={"max_attempts": 1})


def run_cli(tmp_path: Path, url: str, *options: str, **api):
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], [[mobile(1), "Asha"]])
    config = config_file(tmp_path, url, **api)
    return CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json", *options])


# --- Settings -----------------------------------------------------------------------------

def test_verification_is_on_by_default_and_a_bundle_or_insecure_changes_the_ssl_argument(tmp_path, certificate):
    cert, _ = certificate
    default = load_config(config_file(tmp_path, "https://api.example"), environ={})
    assert (default.api.verify_tls, default.api.ca_bundle, ssl_argument(default.api)) == (True, None, True)
    assert default.warnings == ()

    bundled = load_config(config_file(tmp_path, "https://api.example"), environ={},
                          overrides={"api.ca_bundle": str(cert)})
    context = ssl_argument(bundled.api)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "127.0.0.1"),),)]

    insecure = load_config(config_file(tmp_path, "https://api.example", verify_tls=False), environ={})
    assert ssl_argument(insecure.api) is False
    assert insecure.warnings == (INSECURE_WARNING,)
    from_env = load_config(config_file(tmp_path, "https://api.example"),
                           environ={"BATCH_UPDATER_API_VERIFY_TLS": "false"})
    assert ssl_argument(from_env.api) is False


async def test_the_client_hands_the_ssl_argument_to_its_connector(tmp_path, certificate):
    cert, _ = certificate
    for overrides, expected in (({}, True), ({"api.verify_tls": False}, False),
                                ({"api.ca_bundle": str(cert)}, ssl.SSLContext)):
        config = load_config(config_file(tmp_path, "https://api.example"), environ={}, overrides=overrides)
        client = ApiClient.open(config.api, config.limits)
        try:
            given = client.session.connector._ssl
            assert isinstance(given, expected) if isinstance(expected, type) else given is expected
        finally:
            await client.close()


def test_a_missing_or_unreadable_ca_bundle_is_a_config_error(tmp_path):
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    config = config_file(tmp_path, "https://api.example")
    missing = tmp_path / "no-such-ca.pem"
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--ca-bundle", str(missing)])
    assert result.exit_code == 2
    assert result.stderr == (f"batch-updater: error: [api] ca_bundle {missing}: file not found (give the PEM"
                             " file of the CA certificates that signed the API's certificate)\n")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--ca-bundle", str(garbage)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"batch-updater: error: [api] ca_bundle {garbage}: not a PEM file of CA certificates (")


# --- Over HTTPS ---------------------------------------------------------------------------

@pytest.mark.parametrize("auth", [{}, {"auth": "oauth", "username": "demo-key"}])
def test_a_self_signed_api_stops_the_run_at_once_with_the_ca_bundle_hint(tmp_path, https_sandbox, auth):
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(50)])
    config = config_file(tmp_path, https_sandbox.url, **auth)
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json"])
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["reason"].startswith("the API's TLS certificate (127.0.0.1) is not trusted: ")
    assert "certificate" in summary["reason"] and "--ca-bundle FILE" in summary["reason"]
    assert (summary["not_sent"], summary["requests"]) == (50, 0)
    assert summary["reason"] in result.stderr and "Traceback" not in result.output
    assert customer_puts(https_sandbox) == []


def test_the_ca_bundle_makes_it_trusted(tmp_path, https_sandbox, certificate):
    result = run_cli(tmp_path, https_sandbox.url, "--ca-bundle", str(certificate[0]))
    assert result.exit_code == 0, result.output
    assert len(customer_puts(https_sandbox)) == 1
    assert "warning" not in result.stderr


def test_insecure_needs_the_flag_and_warns_on_stderr_and_in_the_log(tmp_path, https_sandbox):
    log_file = tmp_path / "run.log"
    result = run_cli(tmp_path, https_sandbox.url, "--insecure", "--log-file", str(log_file))
    assert result.exit_code == 0, result.output
    assert f"batch-updater: warning: {INSECURE_WARNING}\n" in result.stderr
    assert f"WARNING {INSECURE_WARNING}" in log_file.read_text()
    assert len(customer_puts(https_sandbox)) == 1
