"""Lifecycle: dedup, escalation, cooldown, resolve, storms; all in event time."""

from __future__ import annotations

from netmon.sinks.alerts.lifecycle import Lifecycle
from tests.alerts.receivers import finding

T0 = 1_700_000_000.0


def run(lifecycle: Lifecycle, per_interval: list[list], start: float = T0) -> list[list]:
    """Feed one list of findings per 60 s interval; the notifications of each interval."""
    out = []
    for i, findings in enumerate(per_interval):
        out.append(lifecycle.step(findings, start + 60 * (i + 1)))
    return out


def test_same_host_and_rule_fires_once_while_it_persists():
    notes = run(Lifecycle(), [[finding(start=T0 + 60 * i, severity="warning")] for i in range(5)])
    events = [n.event for batch in notes for n in batch]
    assert events == ["firing"], f"expected one firing for five intervals of one finding, got {events}"


def test_two_rules_on_one_host_are_two_alerts():
    notes = run(Lifecycle(), [[finding(rule="rule.kod_ignored"), finding(rule="model.population")]])
    assert sorted(n.rule for n in notes[0]) == ["model.population", "rule.kod_ignored"]


def test_higher_severity_escalates_at_once_despite_cooldown():
    lc = Lifecycle(cooldown=3600)
    notes = run(lc, [[finding(severity="warning")], [finding(severity="warning")], [finding(severity="critical")]])
    assert [n.event for n in notes[2]] == ["updated"], "a worse severity must be told at once"
    assert notes[2][0].escalated and notes[2][0].severity == "critical"
    assert notes[2][0].id == notes[0][0].id, "an update keeps the alert's id"


def test_score_growth_escalates_only_after_cooldown():
    lc = Lifecycle(cooldown=120, escalate_ratio=2.0)
    scores = [1.0, 3.0, 3.0, 3.0]
    notes = run(lc, [[finding(severity="warning", score=s)] for s in scores])
    assert [len(b) for b in notes] == [1, 0, 1, 0], f"score x3 must wait for the 120 s cooldown: {notes}"
    assert notes[2][0].event == "updated" and notes[2][0].escalated


def test_resolves_after_n_intervals_without_finding_with_end_time():
    lc = Lifecycle(resolve_after=3)
    notes = run(lc, [[finding()], [], [], []])
    assert [len(b) for b in notes] == [1, 0, 0, 1]
    resolved = notes[3][0]
    assert resolved.event == "resolved" and resolved.status == "resolved"
    assert resolved.ends_at == T0 + 60, "ends_at is the end of the last interval that had a finding"


def test_flapping_host_waits_for_cooldown_before_firing_again():
    lc = Lifecycle(resolve_after=1, cooldown=600)
    notes = run(lc, [[finding()], [], [finding(start=T0 + 120)], [finding(start=T0 + 180)]] + [[finding(start=T0 + 60 * i)] for i in range(4, 12)])
    events = [(i, n.event) for i, b in enumerate(notes) for n in b]
    assert events[:2] == [(0, "firing"), (1, "resolved")]
    assert events[2][1] == "firing" and (events[2][0] + 1) * 60 >= 600, f"re-fire came before the cooldown: {events}"


def test_storm_of_hosts_becomes_one_grouped_alert_that_resolves_with_its_last_host():
    lc = Lifecycle(storm_hosts=10, resolve_after=1)
    hosts = [f"10.1.0.{i}" for i in range(1, 31)]
    first = run(lc, [[finding(host=h) for h in hosts]])[0]
    assert len(first) == 1, f"30 hosts at once should be one grouped alert, got {len(first)}"
    storm = first[0]
    assert storm.host == "*" and len(storm.hosts) == 30 and storm.event == "firing"
    later = lc.step([finding(host=hosts[0], start=T0 + 60)], T0 + 120)
    assert later == [], "hosts of a running storm stay quiet"
    last = lc.step([], T0 + 180)
    assert [n.event for n in last] == ["resolved"] and last[0].id == storm.id


def test_fewer_hosts_than_storm_threshold_alert_one_by_one():
    notes = run(Lifecycle(storm_hosts=10), [[finding(host=f"10.1.0.{i}") for i in range(9)]])
    assert len(notes[0]) == 9


def test_state_survives_a_restart_so_open_alerts_are_not_told_again(tmp_path, http_receiver):
    from tests.alerts.receivers import scored
    from tests.alerts.test_webhook import sink

    state = str(tmp_path / "state.json")
    first = sink(tmp_path, [{"kind": "webhook", "url": http_receiver.url}], state_file=state, resolve_after=2)
    first.write(scored([finding()]))
    first.close()
    second = sink(tmp_path, [{"kind": "webhook", "url": http_receiver.url}], state_file=state, resolve_after=2)
    second.write(scored([finding(start=T0 + 60)], start=T0 + 60))
    for i in (2, 3):
        second.write(scored([], start=T0 + 60 * i))
    second.close()
    events = [r.json()["event"] for r in http_receiver.received]
    assert events == ["firing", "resolved"], f"a restart re-announced an open alert: {events}"
    assert len({r.json()["id"] for r in http_receiver.received}) == 1
