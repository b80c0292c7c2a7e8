"""`check_setup`, the pre-flight check: each step against the real sandbox, over http and https.

The https cases reuse test_tls's self-signed sandbox (skipped where openssl is missing).
"""

from __future__ import annotations

import socket

import pytest
import test_tls
from conftest import PASSWORD, customer_puts, write_config

from batch_updater import check
from batch_updater.check import PROBE_VALUES, SKIPPED, STEP_NAMES, CheckStep, check_setup
from batch_updater.config import INSECURE_WARNING, PASSWORD_ENV
from batch_updater.input.columns import SOURCES
from batch_updater.sandbox import Faults, SandboxSettings

OAUTH = {"auth": "oauth", "username": SandboxSettings().oauth_key}
OAUTH_SECRET = SandboxSettings().oauth_secret
NETWORK = ("dns", "port", "tls")
ALL_OK = dict.fromkeys(STEP_NAMES, "ok")
# test_tls's self-signed https sandbox, as fixtures of this module too
certificate, https_sandbox = test_tls.certificate, test_tls.https_sandbox


def statuses(steps: list[CheckStep]) -> dict[str, str]:
    assert [step.name for step in steps] == list(STEP_NAMES)
    return {step.name: step.status for step in steps}


def detail(steps: list[CheckStep], name: str) -> str:
    return next(step.detail for step in steps if step.name == name)


def passes(steps: list[CheckStep]) -> bool:
    """The CLI's exit rule: 0 when every step passes, 3 otherwise."""
    return all(step.ok for step in steps)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def requests_seen(server) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.state.requests]


# --- The step line ----------------------------------------------------------------------

def test_a_step_line_has_its_label_name_and_detail_and_only_ok_passes():
    assert CheckStep("config", "ok", "config/nightly.toml is valid").line() == \
        "ok    config      config/nightly.toml is valid"
    failed = CheckStep("password", "fail", "no password")
    assert failed.line() == "FAIL  password    no password"
    skipped = CheckStep("tls", "skip", SKIPPED)
    assert skipped.line() == "skip  tls         (an earlier step failed)"
    assert [step.ok for step in (failed, skipped)] == [False, False]


# --- Everything passes ------------------------------------------------------------------

@pytest.mark.parametrize("identifier_name", sorted(PROBE_VALUES))
def test_a_good_basic_setup_passes_with_one_lookup_get_and_no_put(tmp_path, sandbox_server, identifier_name):
    server = sandbox_server(customers=100)
    path = write_config(tmp_path, server.url, api={"identifier_name": identifier_name})
    steps = check_setup(path, environ={})
    assert statuses(steps) == ALL_OK and passes(steps)
    assert steps[0].line() == f"ok    config      {path} is valid"
    assert detail(steps, "password") == f"the password comes from [api] password_file {tmp_path / 'secret'}"
    assert detail(steps, "tls") == "plain http: no TLS (fine for the sandbox, not for production)"
    assert detail(steps, "credentials").startswith(
        'accepted: the probe lookup (a customer who does not exist) was answered "not found" (8015')
    assert detail(steps, "answer time").startswith("lookup answered in ")
    [lookup] = server.state.requests
    assert (lookup.method, lookup.path, lookup.status) == ("GET", "/v2/customers/lookup", 400)
    assert lookup.query == {"source": "INSTORE", "identifierName": identifier_name,
                            "identifierValue": PROBE_VALUES[identifier_name]}
    assert lookup.credential == SandboxSettings().till_code and customer_puts(server) == []
    assert server.state.applied_count == 0
    assert all(step.seconds is not None and step.seconds >= 0 for step in steps)


def test_a_good_oauth_setup_fetches_a_token_then_looks_up_with_it(tmp_path, sandbox_server):
    server = sandbox_server(customers=100)
    steps = check_setup(write_config(tmp_path, server.url, api=OAUTH, password=OAUTH_SECRET), environ={})
    assert statuses(steps) == ALL_OK
    assert detail(steps, "password").startswith("the OAuth secret comes from [api] password_file ")
    assert detail(steps, "answer time").startswith("token answered in ")
    assert ", lookup answered in " in detail(steps, "answer time")
    assert requests_seen(server) == [("POST", "/v3/oauth/token/generate"), ("GET", "/v2/customers/lookup")]
    assert "X-CAP-API-OAUTH-TOKEN" in server.state.requests[1].headers
    assert all(OAUTH_SECRET not in step.line() for step in steps)


def test_the_overrides_and_the_environment_are_load_configs(tmp_path, sandbox_server):
    server = sandbox_server(customers=100)
    path = write_config(tmp_path, f"http://127.0.0.1:{free_port()}", password=None)
    steps = check_setup(path, {"api.base_url": server.url, "api.username": None}, environ={PASSWORD_ENV: PASSWORD})
    assert statuses(steps) == ALL_OK
    assert detail(steps, "password") == f"the password comes from {PASSWORD_ENV}"
    assert requests_seen(server) == [("GET", "/v2/customers/lookup")]


# --- The password -----------------------------------------------------------------------

@pytest.mark.parametrize("auth", [{}, OAUTH], ids=["basic", "oauth"])
def test_a_wrong_password_fails_the_credentials_and_never_shows_itself(tmp_path, sandbox_server, auth):
    server = sandbox_server(customers=100)
    wrong = "Wrong-Pa55word-471"
    steps = check_setup(write_config(tmp_path, server.url, api=auth, password=wrong), environ={})
    assert statuses(steps) == {**ALL_OK, "credentials": "fail",
                               "answer time": "ok" if not auth else "skip"}
    assert not passes(steps)
    if auth:  # the token route refused the key and secret: no lookup was sent
        assert detail(steps, "credentials").startswith("OAuth token request refused (HTTP 401): check [api] username")
        assert requests_seen(server) == [("POST", "/v3/oauth/token/generate")]
    else:
        assert detail(steps, "credentials") == ("credentials refused (HTTP 401: Invalid credentials: wrong till"
                                                " code or password): check [api] username and the password")
        assert requests_seen(server) == [("GET", "/v2/customers/lookup")]
    assert all(wrong not in step.line() for step in steps)


def test_no_password_fails_its_step_and_skips_only_the_steps_that_need_it(tmp_path, sandbox_server):
    server = sandbox_server(customers=100)
    steps = check_setup(write_config(tmp_path, server.url, password=None), environ={})
    assert statuses(steps) == {"config": "ok", "password": "fail", **dict.fromkeys(NETWORK, "ok"),
                               "credentials": "skip", "answer time": "skip", "state": "ok",
                               "output": "ok"}
    assert detail(steps, "password") == f"no password: set {PASSWORD_ENV} or [api] password_file"
    assert server.state.requests == []


def test_a_password_in_the_config_file_is_found_there_and_a_readable_file_is_warned_about(tmp_path, sandbox_server):
    server = sandbox_server(customers=100)
    path = write_config(tmp_path, server.url, password=None, api={"password": PASSWORD})
    path.chmod(0o644)
    steps = check_setup(path, environ={})
    assert statuses(steps) == ALL_OK
    assert detail(steps, "password") == f"the password comes from [api] password in {path}"
    assert detail(steps, "config") == (f"{path} is valid; warning: {path} holds a password and is readable by"
                                       f" other users: run chmod 600 {path}")


def test_an_empty_or_unreadable_password_file_fails_the_password_step(tmp_path, sandbox_server):
    server = sandbox_server(customers=100)
    path = write_config(tmp_path, server.url, password="")
    steps = check_setup(path, environ={})
    assert detail(steps, "password") == f"[api] password_file {tmp_path / 'secret'} is empty"
    (tmp_path / "secret").unlink()
    steps = check_setup(path, environ={})
    assert statuses(steps)["config"] == "ok"
    assert detail(steps, "password").startswith(f"[api] password_file {tmp_path / 'secret'}: cannot read (")
    assert statuses(steps)["credentials"] == "skip" and server.state.requests == []


# --- Config, DNS, port ------------------------------------------------------------------

def test_an_invalid_config_fails_listing_every_problem_and_skips_the_rest(tmp_path):
    path = write_config(tmp_path, "http://127.0.0.1:1", api={"source": "NOPE"}, limits={"rate_per_minute": 0})
    steps = check_setup(path, environ={})
    assert statuses(steps) == {"config": "fail", **dict.fromkeys(STEP_NAMES[1:], "skip")}
    assert detail(steps, "config") == (f"{path} [api] source: 'NOPE' is not one of {', '.join(SOURCES)};"
                                       f" {path} [limits] rate_per_minute: must be at least 1, got 0")
    assert all(step.detail == SKIPPED and step.seconds is None for step in steps[1:])


def test_a_missing_config_file_fails_the_config_step(tmp_path):
    steps = check_setup(tmp_path / "nope.toml", environ={})
    assert detail(steps, "config") == f"{tmp_path / 'nope.toml'}: config file not found"
    assert statuses(steps)["password"] == "skip"


def test_nothing_listening_fails_the_port_and_skips_what_follows(tmp_path):
    port = free_port()
    steps = check_setup(write_config(tmp_path, f"http://127.0.0.1:{port}"), environ={})
    assert statuses(steps) == {"config": "ok", "password": "ok", "dns": "ok", "port": "fail",
                               "tls": "skip", "credentials": "skip", "answer time": "skip", "state": "ok",
                               "output": "ok"}
    assert detail(steps, "port").startswith(f"127.0.0.1:{port} refused the connection: nothing listens there;")


def test_a_host_that_does_not_resolve_fails_the_dns_step(tmp_path):
    path = write_config(tmp_path, "https://no-such-host.invalid", limits={"connect_timeout_seconds": 2})
    steps = check_setup(path, environ={})
    assert statuses(steps) == {"config": "ok", "password": "ok", "dns": "fail",
                               **dict.fromkeys(STEP_NAMES[3:-2], "skip"), "state": "ok", "output": "ok"}
    assert "no-such-host.invalid" in detail(steps, "dns")  # "cannot resolve" or "did not resolve within"


# --- TLS --------------------------------------------------------------------------------

def test_a_self_signed_api_fails_tls_with_the_ca_bundle_hint(tmp_path, https_sandbox):
    steps = check_setup(write_config(tmp_path, https_sandbox.url), environ={})
    assert statuses(steps) == {**ALL_OK, "tls": "fail", "credentials": "skip", "answer time": "skip"}
    tls = detail(steps, "tls")
    assert tls.startswith("the certificate of 127.0.0.1 is not trusted (self")  # "self-signed certificate"
    assert tls.endswith("): pass --ca-bundle FILE (the CA that signed it)")
    assert https_sandbox.state.requests == []


def test_the_ca_bundle_makes_every_step_pass(tmp_path, https_sandbox, certificate):
    cert = certificate[0]
    steps = check_setup(write_config(tmp_path, https_sandbox.url, api={"ca_bundle": str(cert)}), environ={})
    assert statuses(steps) == ALL_OK
    assert f", certificate trusted by [api] ca_bundle {cert}, valid until " in detail(steps, "tls")
    assert requests_seen(https_sandbox) == [("GET", "/v2/customers/lookup")]


def test_a_certificate_for_another_host_names_the_mismatch(tmp_path, https_sandbox, certificate):
    url = https_sandbox.url.replace("127.0.0.1", "localhost")
    steps = check_setup(write_config(tmp_path, url, api={"ca_bundle": str(certificate[0])}), environ={})
    assert statuses(steps)["tls"] == "fail"
    assert detail(steps, "tls").startswith("the certificate of localhost is not trusted (Hostname mismatch")
    assert detail(steps, "tls").endswith("check the host in [api] base_url: the certificate names another")


def test_verification_off_passes_tls_with_a_warning(tmp_path, https_sandbox):
    steps = check_setup(write_config(tmp_path, https_sandbox.url), {"api.verify_tls": False}, environ={})
    assert statuses(steps) == ALL_OK
    assert "the certificate is not checked ([api] verify_tls = false or --insecure)" in detail(steps, "tls")
    assert INSECURE_WARNING not in detail(steps, "config")
    assert requests_seen(https_sandbox) == [("GET", "/v2/customers/lookup")]


# --- What the API answers -----------------------------------------------------------------

def test_a_base_url_that_answers_404_is_not_the_api(tmp_path, sandbox_server):
    server = sandbox_server(customers=100)
    steps = check_setup(write_config(tmp_path, server.url + "/nope"), environ={})
    assert statuses(steps) == {**ALL_OK, "credentials": "fail"}
    assert detail(steps, "credentials") == ("the base URL answers, but not as the Capillary API (HTTP 404):"
                                            " check [api] base_url")
    assert server.state.requests == []  # aiohttp's own 404: no route of the sandbox saw it


def test_a_lookup_without_an_answer_in_time_fails_the_answer_time(tmp_path, sandbox_server):
    server = sandbox_server(customers=100, latency_seconds=2.0)
    steps = check_setup(write_config(tmp_path, server.url, limits={"timeout_seconds": 0.2}), environ={})
    assert statuses(steps) == {**ALL_OK, "credentials": "fail", "answer time": "fail"}
    assert detail(steps, "credentials") == detail(steps, "answer time") == "no answer within timeout_seconds (0.2 s)"


def test_a_failing_api_leaves_the_credentials_unchecked(tmp_path, sandbox_server):
    server = sandbox_server(customers=100, faults=Faults(error_503=1.0))
    steps = check_setup(write_config(tmp_path, server.url), environ={})
    assert statuses(steps) == {**ALL_OK, "credentials": "fail"}
    assert detail(steps, "credentials").startswith("credentials not checked: the API answered HTTP 503 (")
    assert detail(steps, "credentials").endswith("; try again later")


def test_an_unexpected_error_is_a_failed_step_not_a_traceback(tmp_path, sandbox_server, monkeypatch):
    server = sandbox_server(customers=100)

    def broken(*args, **kwargs):
        raise RuntimeError(f"boom with {PASSWORD}")

    monkeypatch.setattr(check.ApiClient, "open", broken)
    steps = check_setup(write_config(tmp_path, server.url), environ={})
    assert statuses(steps) == {**ALL_OK, "credentials": "fail", "answer time": "skip"}
    assert detail(steps, "credentials") == "(withheld: the message would show the password)"
    assert detail(steps, "answer time") == "(no request was answered)"
    assert server.state.requests == []


def test_the_probe_values_are_valid_for_their_kind():
    from batch_updater.rows.checks import EMAIL, MOBILE

    assert MOBILE.fullmatch(PROBE_VALUES["mobile"]) and EMAIL.fullmatch(PROBE_VALUES["email"])


# --- Through the CLI: `batch-updater check` ------------------------------------------------

def _check_cli(config, *extra: str, password: str | None = PASSWORD):
    from click.testing import CliRunner

    from batch_updater.cli import main

    env = {PASSWORD_ENV: password} if password is not None else {PASSWORD_ENV: ""}
    return CliRunner().invoke(main, ["check", "--config", str(config), *extra], env=env)


def test_the_check_command_exits_0_when_all_pass_and_3_with_a_line_per_failed_step(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url, password=None)
    passed = _check_cli(config)
    assert passed.exit_code == 0, passed.output
    assert [line.split()[0] for line in passed.stdout.splitlines()] == ["ok"] * len(STEP_NAMES)

    refused = _check_cli(config, password="not-the-password-123")
    assert refused.exit_code == 3
    assert [line for line in refused.stdout.splitlines() if line.startswith("FAIL")] == [
        line for line in refused.stdout.splitlines() if "credentials" in line.split()[1]]
    assert "not-the-password-123" not in refused.output

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    dead = _check_cli(config, "--base-url", f"http://127.0.0.1:{free}")
    assert dead.exit_code == 3
    assert [line.split()[:2] for line in dead.stdout.splitlines()[3:]] == [
        ["FAIL", "port"], ["skip", "tls"], ["skip", "credentials"], ["skip", "answer"], ["ok", "state"],
        ["ok", "output"]]
    assert dead.stderr == ""


def test_the_check_command_refuses_an_untrusted_certificate_and_trusts_the_ca_bundle(
        tmp_path, https_sandbox, certificate):
    config = write_config(tmp_path, https_sandbox.url, password=None)
    untrusted = _check_cli(config)
    assert untrusted.exit_code == 3
    assert "--ca-bundle" in next(line for line in untrusted.stdout.splitlines() if line.startswith("FAIL  tls"))
    trusted = _check_cli(config, "--ca-bundle", str(certificate[0]))
    assert trusted.exit_code == 0, trusted.output
