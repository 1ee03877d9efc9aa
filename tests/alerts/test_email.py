"""Email hook against a real local SMTP server (aiosmtpd): plain, and STARTTLS with AUTH."""

from __future__ import annotations

import email
import shutil
import ssl
import subprocess

import pytest

from tests.alerts.receivers import finding, free_port, scored
from tests.alerts.test_webhook import HOSTILE, sink

aiosmtpd = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd is a test dependency (pip install aiosmtpd)")
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"netmon" and auth_data.password == b"pw"
    return AuthResult(success=ok)


@pytest.fixture
def cert(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    return context


def serve(inbox, **kwargs):
    controller = aiosmtpd.Controller(inbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


def hook(port, **extra):
    return {"kind": "email", "host": "127.0.0.1", "port": port, "from": "netmon@example.edu",
            "to": ["noc@example.edu"], "timeout": 5, **extra}


def test_plain_text_email_reads_well_on_a_phone(tmp_path):
    inbox = Inbox()
    server = serve(inbox)
    try:
        s = sink(tmp_path, [hook(server.port, starttls=False)], evidence_url="https://netmon.example.edu/e/{host}.html")
        s.write(scored([finding(explanation=HOSTILE)]))
        s.close()
    finally:
        server.stop()
    assert len(inbox.messages) == 1, "no email arrived"
    msg = inbox.messages[0]
    assert msg.get_content_type() == "text/plain"
    assert msg["Subject"].startswith("[netmon] [FIRING] critical: host 10.1.2.3")
    assert "\n" not in msg["Subject"] and "Injected" not in msg.keys()
    body = msg.get_payload(decode=True).decode()
    lines = body.splitlines()
    assert lines[0].startswith("[FIRING]"), "the first line says what happened"
    assert "Report: https://netmon.example.edu/e/10.1.2.3.html" in lines
    assert lines[lines.index("To muzzle it:") + 1].startswith("netmon muzzle add 10.1.2.3 --for 1h"), "no muzzle line"
    assert max(len(line) for line in lines if not line.startswith(("[FIRING]", "$("))) <= 80, "lines should be short"


def test_starttls_with_auth_delivers(tmp_path, cert):
    inbox = Inbox()
    server = serve(inbox, tls_context=cert, require_starttls=True, authenticator=authenticator, auth_require_tls=True)
    try:
        s = sink(tmp_path, [hook(server.port, starttls=True, verify=False, username="netmon", password="pw")])
        s.write(scored([finding()]))
        s.close()
    finally:
        server.stop()
    assert len(inbox.messages) == 1, "no email arrived over STARTTLS with AUTH"


def test_check_names_bad_smtp_settings():
    import netmon.sinks.alerts as alerts

    config = alerts.Config.model_validate({"type": "alerts", "hooks": [
        hook(free_port(), starttls=False, tls=False, username="u", password="p", **{"from": "not-an-address"}),
        hook(free_port(), tls=True, starttls=True, password_env="NETMON_TEST_NO_SUCH_VAR", username="u"),
    ]})
    problems = "\n".join(alerts.check(config))
    for expected in ("refusing AUTH over plain text", "'not-an-address' is not an email address",
                     "exclude each other", "NETMON_TEST_NO_SUCH_VAR", "unreachable"):
        assert expected in problems, f"check-config should say {expected!r}; said:\n{problems}"
