"""A real Alertmanager (Debian's prometheus-alertmanager) receives and resolves netmon's alerts."""

from __future__ import annotations

import requests

from tests.alerts.receivers import finding, scored, wait_for
from tests.alerts.test_webhook import sink


def alerts_in(url: str, active: bool = True) -> list[dict]:
    params = {"active": str(active).lower(), "silenced": "true", "inhibited": "true", "unprocessed": "true"}
    return requests.get(url + "/api/v2/alerts", params=params, timeout=5).json()


def test_alert_appears_with_labels_and_is_resolved_when_netmon_resolves(tmp_path, alertmanager):
    s = sink(tmp_path, [{"kind": "alertmanager", "url": alertmanager, "labels": {"team": "noc"}}],
             resolve_after=1, evidence_url="https://netmon.example.edu/evidence/{host}.html")
    s.write(scored([finding(host="10.1.2.3", server="192.0.2.10", group="labs")]))
    assert s.drain(10), "alert was not delivered to Alertmanager"
    assert wait_for(lambda: len(alerts_in(alertmanager)) == 1), f"alertmanager shows {alerts_in(alertmanager)}"
    got = alerts_in(alertmanager)[0]
    assert got["labels"] == {
        "alertname": "netmon_rule_kod_ignored", "host": "10.1.2.3", "group": "labs", "server": "192.0.2.10",
        "rule": "rule.kod_ignored", "severity": "critical", "team": "noc",
    }
    assert got["annotations"]["evidence"] == "https://netmon.example.edu/evidence/10.1.2.3.html"
    assert "KoD" in got["annotations"]["explanation"] and got["annotations"]["summary"].startswith("[FIRING]")
    assert got["startsAt"].startswith("2023-11-14T22:13:20")
    assert got["status"]["state"] == "active"

    s.write(scored([], start=1_700_000_060.0))
    s.close()
    assert wait_for(lambda: alerts_in(alertmanager) == []), "alert is still active after netmon resolved it"
    assert all(a["labels"]["host"] != "10.1.2.3" for a in alerts_in(alertmanager))


def test_storm_reaches_alertmanager_as_one_alert(tmp_path, alertmanager):
    s = sink(tmp_path, [{"kind": "alertmanager", "url": alertmanager}], storm_hosts=5)
    s.write(scored([finding(host=f"10.2.0.{i}") for i in range(12)]))
    s.close()
    assert wait_for(lambda: len(alerts_in(alertmanager)) == 1)
    got = alerts_in(alertmanager)[0]
    assert got["labels"]["host"] == "*" and len(got["annotations"]["hosts"].split()) == 12
