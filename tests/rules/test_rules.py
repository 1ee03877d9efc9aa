"""The rules detector on crafted traffic: the incident fires, the look-alikes do not."""

from __future__ import annotations

import pytest

from netmon.aggregate import Aggregator
from netmon.config import ConfigError, validate
from netmon.detect import rules
from netmon.detect.engine import Engine
from tests.aggregate.craft import Traffic, campus, settings

HOST, SERVER = "10.0.0.9", "192.0.2.1"


def findings(traffic: Traffic, **config):
    aggregator = Aggregator(campus(), settings())
    detector = rules.build(rules.Config(**config))
    found = []
    for intervals in aggregator.add(traffic.rows()) + aggregator.flush():
        out = detector.score(intervals)
        assert out.scores["rules"].shape == (len(intervals),)
        found += out.findings
    return found


def detectors(found, host: str = HOST) -> set[str]:
    return {f.detector for f in found if f.host == host}


def test_the_incident_fires_poll_rate_kod_ignored_and_origin_with_explanations():
    t = Traffic(seed=11)
    t.runaway(HOST, SERVER, 0, 1800, instances=37, kod_from=300)
    found = findings(t)
    assert detectors(found) == {"rule.poll_rate", "rule.kod_ignored", "rule.origin"}
    rate = max((f for f in found if f.detector == "rule.poll_rate"), key=lambda f: f.score)
    assert rate.severity == "critical"
    assert "client instances behind 1 source port" in rate.explanation
    assert 30 <= rate.evidence["instances"]["value"] <= 45
    assert rate.server == SERVER
    kod = next(f for f in found if f.detector == "rule.kod_ignored")
    assert "RATE" in kod.explanation and kod.start >= 300 - 60
    origin = next(f for f in found if f.detector == "rule.origin")
    assert origin.evidence["org_mismatch"]["value"] >= 3
    assert all(f.explanation and f.evidence for f in found)


def test_an_unadvertised_poll_is_named_as_such_and_judged_at_64_s():
    t = Traffic(seed=12)
    t.runaway(HOST, SERVER, 0, 900, instances=12, poll=0)
    rate = [f for f in findings(t) if f.detector == "rule.poll_rate"]
    assert rate, "12 daemons sharing port 123 without a poll field did not fire"
    assert "poll not advertised, 64 s assumed" in rate[0].explanation
    assert "advertised poll of 1 s" not in rate[0].explanation
    assert rate[0].evidence["interval_min"]["baseline"] == 64.0


def test_the_incident_is_flagged_at_four_daemons_within_a_few_intervals():
    t = Traffic(seed=5)
    t.runaway(HOST, SERVER, 0, 900, instances=4)
    rate = [f for f in findings(t) if f.detector == "rule.poll_rate"]
    assert rate, "4 ntpd sharing port 123 must be flagged"
    assert min(f.start for f in rate) <= 4 * 60


def test_one_boot_iburst_does_not_fire():
    t = Traffic()
    end = t.iburst(HOST, SERVER, 10.0)
    t.ntpd(HOST, SERVER, end + 64, 3600, poll=6)
    assert findings(t) == []


def test_iburst_straddling_two_intervals_does_not_fire():
    t = Traffic()
    end = t.iburst(HOST, SERVER, 52.0)
    t.ntpd(HOST, SERVER, end + 64, 1200, poll=6)
    assert findings(t) == []


def test_boot_iburst_to_four_servers_does_not_fire():
    t = Traffic()
    for i in range(4):
        end = t.iburst(HOST, f"192.0.2.{i + 1}", 5.0 + i * 0.3)
        t.ntpd(HOST, f"192.0.2.{i + 1}", end + 64, 1800, poll=6)
    assert findings(t) == []


def test_nat_gateway_of_well_behaved_clients_with_one_kod_does_not_fire():
    t = Traffic(seed=2)
    for i, port in enumerate(range(40000, 40040)):
        t.ntpd(HOST, SERVER, i * 1.5, 1800, poll=6, port=port, kod="RATE" if i == 0 else None)
    for i, port in enumerate(range(41000, 41020)):
        t.ntpd(HOST, "192.0.2.50", i * 3.1, 1800, poll=6, port=port, origin="zero")
    assert findings(t) == []


def test_busy_internal_ntp_server_does_not_fire():
    t = Traffic(seed=4)
    server = "10.0.0.123"
    for i in range(300):
        client = f"198.51.{i // 250}.{i % 250 + 1}"
        t.ntpd(client, server, (i * 0.37) % 64, 1200, poll=6, port=40000 + i)
    t.ntpd(server, SERVER, 0, 1200, poll=6)
    found = findings(t)
    assert [f for f in found if f.host == server] == []


def test_chrony_clients_with_zero_origins_and_random_ports_do_not_fire():
    t = Traffic(seed=6)
    time = 0.0
    while time < 1800:
        t.request(time, HOST, SERVER, int(t.rng.integers(32768, 60999)), org=0)
        time += 16.0  # chrony at minpoll 4 while syncing: fast but advertised
    assert findings(t) == []


def test_normal_ntpd_for_an_hour_does_not_fire():
    t = Traffic()
    t.ntpd(HOST, SERVER, 0, 3600, poll=6)
    t.ntpd("10.0.0.10", SERVER, 7, 3600, poll=10)
    assert findings(t) == []


def test_monlist_reflector_fires_critical():
    t = Traffic()
    for i in range(20):
        t.packet(float(i), "203.0.113.7", HOST, 50000, 123, mode=7, ctl_code=42, bytes=36, poll=0)
        for j in range(10):
            t.packet(i + 0.01 * j, HOST, "203.0.113.7", 123, 50000, mode=7, ctl_code=42, ctl_response=1,
                     bytes=468, poll=0)
    (finding,) = findings(t)
    assert finding.detector == "rule.reflector" and finding.severity == "critical"
    assert "monlist" in finding.explanation and "amplification" in finding.explanation


def test_policy_flags_only_servers_outside_the_allowed_list():
    t = Traffic()
    t.ntpd(HOST, SERVER, 0, 100)
    t.ntpd("10.0.0.10", "10.255.0.1", 0, 100)
    assert findings(t) == [], "policy is off without allowed_servers"
    found = findings(t, allowed_servers=["10.255.0.0/16"])
    assert {(f.host, f.detector, f.server) for f in found} == {(HOST, "rule.policy", SERVER)}
    assert SERVER in found[0].explanation


def test_flagged_hosts_score_above_zero_and_others_zero():
    t = Traffic(seed=1)
    t.runaway(HOST, SERVER, 0, 600, instances=20, kod_from=0)
    t.ntpd("10.0.0.10", SERVER, 0, 600)
    aggregator = Aggregator(campus(), settings())
    detector = rules.build(rules.Config())
    last = (aggregator.add(t.rows()) + aggregator.flush())[-2]
    scores = dict(zip(last.host.tolist(), detector.score(last).scores["rules"].tolist()))
    assert scores[HOST] > 1 and scores["10.0.0.10"] == 0


def test_engine_runs_rules_by_name_from_the_config(tmp_path):
    settings_ = validate({"detect": {"detectors": ["rules"], "rules": {"poll_ratio": 3},
                                     "checkpoint": str(tmp_path / "c.ckpt")}})
    engine = Engine(settings_.detect)
    t = Traffic()
    t.runaway(HOST, SERVER, 0, 300, instances=10, kod_from=0)
    aggregator = Aggregator(campus(), settings())
    scored = [engine.process(iv) for iv in aggregator.add(t.rows()) + aggregator.flush()]
    assert any(f.detector == "rule.kod_ignored" for s in scored for f in s.findings)


@pytest.mark.parametrize("table, key", [({"poll_ratoi": 3}, "poll_ratoi"), ({"poll_ratio": 0.5}, "poll_ratio"),
                                         ({"allowed_servers": ["not-a-prefix"]}, "allowed_servers")])
def test_bad_rules_config_names_the_key(table, key):
    with pytest.raises(ConfigError) as error:
        validate({"detect": {"detectors": ["rules"], "rules": table}})
    assert key in str(error.value)


def test_flow_records_alone_never_fire_a_header_rule():
    t = Traffic()
    for i in range(30):  # a heavy flow exporter view: counts, no NTP header
        t.flow(i * 60.0, HOST, SERVER, 123, 123, packets=500, size=38000)
        t.flow(i * 60.0, SERVER, HOST, 123, 123, packets=500, size=38000)
    assert findings(t) == []
