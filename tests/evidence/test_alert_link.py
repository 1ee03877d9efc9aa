"""A replay with the store and the alerts sink: the alert links to the evidence report netmon writes."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from netmon.cli import main
from tests.alerts.receivers import HttpReceiver
from tests.evidence.incident import RUNAWAY, write_incident_pcap


def test_replayed_incident_alerts_once_per_rule_with_a_link_to_its_report(tmp_path):
    receiver = HttpReceiver().start()
    try:
        pcap = tmp_path / "edge.pcap"
        write_incident_pcap(pcap)
        reports = tmp_path / "evidence"
        config = tmp_path / "netmon.toml"
        config.write_text(
            '[campus]\ninternal = ["10.0.0.0/8"]\n'
            f'[[sinks]]\ntype = "store"\npath = "{tmp_path / "store.db"}"\n'
            f'[[sinks]]\ntype = "alerts"\nsilences_file = ""\nevidence_url = "{reports}/{{host}}/report.html"\n'
            f'[[sinks.hooks]]\nkind = "webhook"\nurl = "{receiver.url}"\n'
        )
        result = CliRunner().invoke(main, ["replay", str(pcap), "--config", str(config)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    finally:
        receiver.stop()
    alerts = [r.json() for r in receiver.received]
    firing = [a for a in alerts if a["event"] == "firing"]
    assert firing and all(a["host"] == RUNAWAY for a in firing), f"alerts for the wrong hosts: {alerts}"
    rules = [a["rule"] for a in firing]
    assert "rule.kod_ignored" in rules and len(rules) == len(set(rules)), f"one firing per host and rule: {rules}"
    link = Path(firing[0]["evidence_url"])
    assert link == reports / "10.1.2.3" / "report.html"
    made = CliRunner().invoke(main, ["evidence", RUNAWAY, "--db", str(tmp_path / "store.db"), "--out", str(link.parent)])
    assert made.exit_code == 0, made.output
    assert link.exists(), "the alert's evidence link does not point at the report `netmon evidence` writes"
