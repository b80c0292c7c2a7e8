"""The end-of-run webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from click.testing import CliRunner
from conftest import mobile, write_config, write_csv

from batch_updater.cli import main


class _Webhook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Webhook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Webhook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Webhook.received
    server.shutdown()


def test_webhook_is_posted_only_when_a_run_has_errors(tmp_path, sandbox_server, webhook):
    url, received = webhook
    server = sandbox_server()
    good = write_csv(tmp_path / "good.csv", ["identifierValue"], [[mobile(1)]])
    bad = write_csv(tmp_path / "bad.csv", ["identifierValue"], [[mobile(2)], ["919700000000"]])
    config = write_config(tmp_path, server.url, notify={"webhook_url": url})
    runner = CliRunner()
    assert runner.invoke(main, ["run", str(good), "--config", str(config)]).exit_code == 0
    assert received == []
    result = runner.invoke(main, ["run", str(bad), "--config", str(config)])
    assert result.exit_code == 1
    [post] = received
    assert post["text"].startswith(f"batch-updater finished with errors: {bad}")
    assert post["summary"]["errors"] == 1 and "errors: " in post["text"]
    assert url not in result.output


def test_unreachable_webhook_is_a_warning_not_a_failure(tmp_path, sandbox_server):
    server = sandbox_server()
    bad = write_csv(tmp_path / "bad.csv", ["identifierValue"], [["919700000000"]])
    config = write_config(tmp_path, server.url, notify={"webhook_url": "http://127.0.0.1:9/hook"})
    result = CliRunner().invoke(main, ["run", str(bad), "--config", str(config)])
    assert result.exit_code == 1
    assert "could not post the end-of-run notification to the webhook" in result.output
