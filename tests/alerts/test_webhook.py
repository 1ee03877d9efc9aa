"""Generic webhook and chat payloads, delivered to a real local HTTP receiver."""

from __future__ import annotations

import hmac
import json
import re
from pathlib import Path

import jsonschema

import netmon.sinks.alerts as alerts
from netmon.sinks.alerts.webhook import signature
from tests.alerts.receivers import finding, scored

SCHEMA = json.loads((Path(alerts.__file__).parent / "schema.json").read_text())
HOSTILE = "$(touch /tmp/pwned) `id` <script>alert(1)</script> *bold* [x](http://evil) @channel <!everyone>\r\nInjected: yes\x00\x1b[31m"


def sink(tmp_path, hooks, **extra):
    config = alerts.Config.model_validate(
        {"type": "alerts", "silences_file": str(tmp_path / "silences.json"), "hooks": hooks, "backoff": 0.05, **extra}
    )
    return alerts.build(config, None)


def test_webhook_body_matches_schema_and_signature_verifies(tmp_path, http_receiver):
    s = sink(tmp_path, [{"kind": "webhook", "url": http_receiver.url, "secret": "s3cret", "headers": {"X-Team": "noc"}}],
             evidence_url="https://netmon.example.edu/evidence/{host}.html")
    s.write(scored([finding()]))
    s.close()
    assert len(http_receiver.received) == 1, "the receiver got no webhook"
    got = http_receiver.received[0]
    jsonschema.validate(got.json(), SCHEMA)
    expected = signature("s3cret", got.headers["X-Netmon-Timestamp"], got.body)
    assert hmac.compare_digest(got.headers["X-Netmon-Signature"], expected), "HMAC signature does not verify"
    assert signature("wrong", got.headers["X-Netmon-Timestamp"], got.body) != expected
    assert got.headers["X-Team"] == "noc", "custom header missing"
    body = got.json()
    assert body["version"] == "netmon.alert/1" and body["event"] == "firing" and body["host"] == "10.1.2.3"
    assert body["evidence_url"] == "https://netmon.example.edu/evidence/10.1.2.3.html"
    assert body["evidence"]["after_kod"] == {"value": 212.0, "baseline": 0.0}


def test_firing_then_resolved_reach_webhook_in_order(tmp_path, http_receiver):
    s = sink(tmp_path, [{"kind": "webhook", "url": http_receiver.url}], resolve_after=2)
    s.write(scored([finding()]))
    for i in range(1, 3):
        s.write(scored([], start=1_700_000_000.0 + 60 * i))
    s.close()
    events = [r.json()["event"] for r in http_receiver.received]
    assert events == ["firing", "resolved"], events
    assert len({r.json()["id"] for r in http_receiver.received}) == 1


def test_chat_payloads_escape_hostile_text(tmp_path, http_receiver):
    hooks = [{"kind": kind, "url": http_receiver.url} for kind in ("slack", "mattermost", "teams")]
    s = sink(tmp_path, hooks)
    s.write(scored([finding(host="10.1.2.3", explanation=HOSTILE, server="192.0.2.1")]))
    s.close()
    assert len(http_receiver.received) == 3
    bodies = {_chat_kind(r.json()): json.dumps(r.json()) for r in http_receiver.received}
    slack, mattermost, teams = bodies["slack"], bodies["mattermost"], bodies["teams"]
    for name, text in bodies.items():
        assert "<script>" not in text, f"{name}: raw HTML passed through"
        assert "\\u0000" not in text and "\\u001b" not in text, f"{name}: control characters passed through"
        assert "\\r\\nInjected" not in text, f"{name}: a line break from packet data passed through"
    for name, text in (("mattermost", mattermost), ("teams", teams)):
        assert "[x](http://evil)" not in text, f"{name}: a Markdown link passed through"
        assert re.search(r"(?<!\\)@channel", text) is None, f"{name}: a channel mention passed through unescaped"
    assert "<!everyone>" not in slack and "&lt;!everyone&gt;" in slack, "Slack mention not neutralised"
    assert "*bold*" not in slack, "Slack formatting not neutralised"
    card = json.loads(teams)["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive" and card["content"]["type"] == "AdaptiveCard"


def test_hook_min_severity_filters_but_resolves_still_arrive(tmp_path, http_receiver):
    s = sink(tmp_path, [{"kind": "webhook", "url": http_receiver.url, "min_severity": "critical"}], resolve_after=1)
    s.write(scored([finding(severity="warning", host="10.0.0.1"), finding(severity="critical", host="10.0.0.2")]))
    s.close()
    assert [r.json()["host"] for r in http_receiver.received] == ["10.0.0.2"]


def _chat_kind(body: dict) -> str:
    return "teams" if body.get("type") == "message" else "slack" if "attachments" in body else "mattermost"
