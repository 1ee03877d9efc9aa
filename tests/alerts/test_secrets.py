"""Secrets stay secret: check-config and failing hooks name keys and endpoints, never credentials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netmon.config import redact, redact_url
from tests.alerts.receivers import finding, free_port, scored
from tests.alerts.test_webhook import sink

CASE = Path(__file__).resolve().parents[1] / "cases" / "check-config-secrets"
EXPECTED = json.loads((CASE / "expected.json").read_text())
NETMON = str(Path(sys.executable).with_name("netmon"))


@pytest.mark.parametrize("name", ["invalid.toml", "checks.toml"])
def test_check_config_never_echoes_secrets_mistyped_values_or_url_credentials(name):
    done = subprocess.run([NETMON, "check-config", str(CASE / name)], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    leaked = [secret for secret in EXPECTED["never_shown"] if secret in output]
    assert not leaked, f"check-config printed {leaked}:\n{output}"
    for line in EXPECTED[name]:
        assert line in output, f"check-config does not say {line!r}:\n{output}"


@pytest.mark.parametrize("url,shown", [
    ("https://user:pass@hooks.slack.com/services/T0/B0/KEY", "https://hooks.slack.com/…"),
    ("http://127.0.0.1:9093/api/v2/alerts", "http://127.0.0.1:9093/…"),
    ("https://example.net", "https://example.net"),
    ("https://example.net/?token=abc", "https://example.net/…"),
    ("http://[::1:bad", "(a malformed URL)"),
    ("http://[::1]:8086", "http://[::1]:8086"),
])
def test_redacted_url_keeps_scheme_host_and_port_only(url, shown):
    assert redact_url(url) == shown
    assert redact(f"failed: {url!r} said no") == f"failed: '{shown}' said no"
    assert redact(redact(f"failed ({url}): refused")) == f"failed ({shown}): refused", \
        "redacting a line twice (a sink's log of an error that named a redacted URL) changed it"


def _failing_hook_log(tmp_path, http_receiver, capsys, url: str) -> str:
    s = sink(tmp_path, [{"kind": "slack", "url": url, "timeout": 2}], retry_for=0.3)
    s.write(scored([finding()]))
    s.close()
    logged = capsys.readouterr()
    return logged.out + logged.err  # log lines go to stderr once the CLI set logging up


def test_failing_chat_hook_logs_its_url_redacted_on_a_transport_error(tmp_path, http_receiver, capsys):
    port = free_port()
    out = _failing_hook_log(tmp_path, http_receiver, capsys, f"http://bot:PASSWORD@127.0.0.1:{port}/services/T0/B0/KEY")
    assert "sink write failed" in out and "sink=slack0" in out, out
    assert f"http://127.0.0.1:{port}/…: ConnectionError" in out, out
    assert "PASSWORD" not in out and "KEY" not in out and "bot" not in out, f"the hook URL leaked into the log:\n{out}"


def test_failing_chat_hook_logs_its_url_redacted_on_an_http_error(tmp_path, http_receiver, capsys):
    http_receiver.status = 500
    url = http_receiver.url.replace("http://", "http://bot:PASSWORD@") + "/services/T0/B0/KEY"
    out = _failing_hook_log(tmp_path, http_receiver, capsys, url)
    assert f"http://127.0.0.1:{http_receiver.port}/… answered HTTP 500" in out, out
    assert "PASSWORD" not in out and "KEY" not in out, f"the hook URL leaked into the log:\n{out}"
