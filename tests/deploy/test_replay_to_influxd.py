"""End to end: `netmon replay` of the sample capture (deploy/samples) into influxd 1.x through
the influx sink, then every dashboard panel shows the runaway host the way it should."""

from __future__ import annotations

import json

from tests.deploy.conftest import END, RUNAWAY, START
from tests.deploy.test_dashboards_influxd import panels, rows, substitute



def top(series: list[dict], column: str) -> dict:
    return max(rows(series), key=lambda r: r[column] or 0)


def test_overview_puts_the_runaway_first(replayed):
    results = {p["title"]: [replayed.series(substitute(t["query"], START, END)) for t in p["targets"]]
               for p in panels("netmon-overview.json")}
    assert top(results["Hosts by score"][0], "score")["host"] == RUNAWAY
    assert top(results["Top NTP talkers"][0], "requests")["host"] == RUNAWAY
    findings = rows(results["Findings"][0])
    assert {r["detector"] for r in findings if r["host"] == RUNAWAY} >= {"rule.kod_ignored", "rule.origin"}
    kod = rows(results["KoD timeline"][0])
    assert sum(r["KoD RATE"] or 0 for r in kod) > 0 and sum(r["requests after KoD"] or 0 for r in kod) > 0
    assert rows(results["Critical findings"][0])[0]["count"] > 0


def test_host_drilldown_of_the_runaway(replayed):
    results = {p["title"]: [replayed.series(substitute(t["query"], START, END, host=RUNAWAY)) for t in p["targets"]]
               for p in panels("netmon-host.json")}
    empty = [title for title, series in results.items() if not all(series)]
    assert not empty, f"panels without data for {RUNAWAY}: {empty}"
    assert max(r["instances"] or 0 for r in rows(results["Client instances, servers, ports"][0])) >= 20
    assert max(r["rate vs poll"] or 0 for r in rows(results["Polling against its own poll"][0])) > 2.5
    assert sum(r["mismatch"] or 0 for r in rows(results["Origin timestamps"][0])) > 0
    evidence = [json.loads(r["evidence"]) for r in rows(results["Findings for this host"][0])]
    assert evidence and all(isinstance(e, dict) for e in evidence)
