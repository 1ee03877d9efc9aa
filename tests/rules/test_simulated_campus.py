"""The rules over helper C1's simulated campus: the injected cases fire, the look-alikes stay quiet.

The simulator's normal hosts include what the rules must not flag: ntpd with iburst
at boot, chrony with random ports and zero origins, w32time, NAT gateways and VPN
concentrators (some drawing KoD from a strict server), busy internal NTP servers
and DHCP laptops.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from netmon.aggregate import Aggregator
from netmon.config import Aggregate, Campus
from netmon.detect import rules
from netmon.simulate import Scenario, generate


@pytest.fixture(scope="module")
def simulated():
    sim = generate(Scenario(hosts=400, days=0.5, seed=3))
    aggregator = Aggregator(Campus(internal=[sim.scenario.internal, sim.scenario.internal6]), Aggregate())
    detector = rules.build(rules.Config())
    by_host: dict[str, set[str]] = defaultdict(set)
    for batch in sim.batches():
        for intervals in aggregator.add(batch):
            for finding in detector.score(intervals).findings:
                by_host[finding.host].add(finding.detector)
    for intervals in aggregator.flush():
        for finding in detector.score(intervals).findings:
            by_host[finding.host].add(finding.detector)
    cases = {label["host"]: label["case"] for label in sim.labels}
    return sim, cases, by_host


def test_the_incident_host_trips_rate_kod_and_origin_rules(simulated):
    _, cases, by_host = simulated
    (host,) = [h for h, case in cases.items() if case == "incident"]
    assert by_host[host] >= {"rule.poll_rate", "rule.kod_ignored", "rule.origin"}


def test_the_monlist_reflector_is_flagged(simulated):
    _, cases, by_host = simulated
    (host,) = [h for h, case in cases.items() if case == "reflector"]
    assert "rule.reflector" in by_host[host]


def test_no_rule_fires_on_any_normal_host(simulated):
    sim, cases, by_host = simulated
    wrong = {host: (sim.hosts.get(host, {}).get("kind"), sorted(found))
             for host, found in by_host.items() if host not in cases}
    assert wrong == {}, f"rules fired on normal hosts (kind, rules): {wrong}"
