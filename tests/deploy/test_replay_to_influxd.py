"""End to end: `netmon replay` of the sample capture (deploy/samples) into influxd 1.x through
the influx sink, then every dashboard panel shows the runaway host the way it should."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.test_dashboards_influxd import panels, rows, substitute
from tests.influx.servers import Influx1

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "deploy" / "samples" / "campus-runaway.pcap.gz"
RUNAWAY = "10.20.24.112"  # see deploy/samples/README.md
START, END = 1772409600.0, 1772420400.0  # 2026-03-02 00:00 to 03:00 UTC, the capture


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    if not shutil.which("influxd"):
        pytest.skip("influxd (Debian package influxdb) is not installed: bash deploy/install.sh --all")
    if not SAMPLE.exists():
        pytest.skip(f"sample capture {SAMPLE} missing")
    root = tmp_path_factory.mktemp("replay")
    (root / "influxd").mkdir()
    server = Influx1.create(root / "influxd")
    server.start()
    server.create_database("netmon")
    config = root / "netmon.toml"
    config.write_text(
        '[campus]\ninternal = ["10.20.0.0/16", "2001:db8:20::/48"]\n'
        '[detect]\ndetectors = ["rules", "population"]\ncheckpoint = "state.ckpt"\n'
        f'[[sinks]]\ntype = "influx"\napi = "v1"\nurl = "{server.url}"\nspool_dir = "spool"\nflush_interval = 0.2\nhealth_interval = 0.1\n'
    )
    result = subprocess.run([str(REPO / ".venv/bin/netmon"), "replay", str(SAMPLE), "--config", str(config)],
                            cwd=root, capture_output=True, text=True, timeout=300)
    try:
        assert result.returncode == 0, f"replay failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        yield server
    finally:
        server.stop()


def top(series: list[dict], column: str) -> dict:
    return max(rows(series), key=lambda r: r[column] or 0)


def test_overview_puts_the_runaway_first(replayed):
    results = {p["title"]: [replayed.series(substitute(t["query"], START, END)) for t in p["targets"]]
               for p in panels("netmon-overview.json")}
    # the sample has no malformed packet and loses none: no decode.skip, drops or lost counter at all
    clean = {("Decode errors by reason", 0), ("Drops and write errors", 1)}
    empty = [(title, k) for title, series in results.items() for k, found in enumerate(series)
             if not found and (title, k) not in clean]
    assert not empty, f"panels (and target) without data after the replay: {empty}"
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
    quiet = {"Mode 6/7 traffic", "Amplification"}  # a client that sends no mode 6/7 may still have rows of zeros
    empty = [title for title, series in results.items() if not all(series) and title not in quiet]
    assert not empty, f"panels without data for {RUNAWAY}: {empty}"
    assert max(r["instances"] or 0 for r in rows(results["Client instances, servers, ports"][0])) >= 20
    assert max(r["rate vs poll"] or 0 for r in rows(results["Polling against its own poll"][0])) > 2.5
    assert sum(r["mismatch"] or 0 for r in rows(results["Origin timestamps"][0])) > 0
    evidence = [json.loads(r["evidence"]) for r in rows(results["Findings for this host"][0])]
    assert evidence and all(isinstance(e, dict) for e in evidence)
