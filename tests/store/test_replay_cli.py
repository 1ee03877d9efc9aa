"""``netmon replay``, ``netmon hosts`` and ``netmon report`` end to end on a written pcap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from netmon.cli import main
from netmon.decode.encode import frames_from_observations
from netmon.sources.pcapfile import write_pcap
from tests.aggregate.craft import Traffic

T0 = 1_700_000_000.0
RUNAWAY, NORMAL, NAT = "10.1.0.9", "10.1.0.5", "10.1.0.77"
V6_RUNAWAY = "2001:db8:1:2::abcd"


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    """30 minutes: an incident host (12 ntpd on port 123, KoD ignored), a normal client, a NAT, an IPv6 runaway."""
    t = Traffic(seed=21)
    t.runaway(RUNAWAY, "192.0.2.1", T0, T0 + 1800, instances=12, kod_from=T0 + 300)
    t.ntpd(NORMAL, "192.0.2.1", T0, T0 + 1800)
    for i, port in enumerate(range(40000, 40020)):
        t.ntpd(NAT, "192.0.2.2", T0 + i, T0 + 1800, port=port, origin="zero")
    t.runaway(V6_RUNAWAY, "2001:db8:ffff::123", T0, T0 + 1800, instances=6)
    path = tmp_path_factory.mktemp("capture") / "incident.pcap"
    write_pcap(path, frames_from_observations(t.rows()))
    return path


def replay(tmp_path: Path, *args: str):
    return CliRunner().invoke(main, ["replay", *args, "--db", str(tmp_path / "n.db")], catch_exceptions=False)


def test_replay_names_the_runaway_with_reasons_and_writes_findings_json(tmp_path, capture):
    findings = tmp_path / "findings.jsonl"
    result = replay(tmp_path, str(capture), "--internal", "10.1.0.0/16", "--internal", "2001:db8:1::/48",
                    "--findings-json", str(findings))
    assert result.exit_code == 0, result.output
    assert "Worst hosts" in result.output and "client instances" in result.output
    lines = [json.loads(line) for line in findings.read_text().splitlines()]
    assert lines, "findings file is empty"
    assert set(lines[0]) >= {"host", "start", "end", "rule", "severity", "score", "explanation"}
    hosts = {line["host"] for line in lines}
    assert hosts == {RUNAWAY, "2001:db8:1:2::/64"}, f"only the runaways are flagged, got {hosts}"
    rules_hit = {line["rule"] for line in lines if line["host"] == RUNAWAY}
    assert rules_hit >= {"rule.poll_rate", "rule.kod_ignored", "rule.origin"}
    assert all(T0 - 60 <= line["start"] < line["end"] <= T0 + 1900 for line in lines), "event time, UNIX seconds"
    assert result.output.index(RUNAWAY) < result.output.index("2001:db8:1:2::/64"), "worst host first"
    report = CliRunner().invoke(main, ["report", V6_RUNAWAY, "--db", str(tmp_path / "n.db")])
    assert report.exit_code == 0 and "2001:db8:1:2::/64" in report.output, "an IPv6 address finds its /64"


def test_hosts_and_report_read_what_replay_stored(tmp_path, capture):
    assert replay(tmp_path, str(capture), "--internal", "10.1.0.0/16").exit_code == 0
    runner = CliRunner()
    hosts = runner.invoke(main, ["hosts", "--top", "3", "--db", str(tmp_path / "n.db")])
    assert hosts.exit_code == 0, hosts.output
    assert hosts.output.index(RUNAWAY) < hosts.output.index(NAT)
    report = runner.invoke(main, ["report", RUNAWAY, "--db", str(tmp_path / "n.db")])
    assert report.exit_code == 0, report.output
    assert "rule.kod_ignored" in report.output and str(capture) in report.output.replace("\n", "")
    v6 = runner.invoke(main, ["report", "2001:db8:1:2::1", "--db", str(tmp_path / "n.db")])
    assert v6.exit_code != 0, "no IPv6 prefix was given to this replay"
    missing = runner.invoke(main, ["report", "10.9.9.9", "--db", str(tmp_path / "n.db")])
    assert missing.exit_code != 0 and "not in" in missing.output


def test_interval_option_sets_the_window_length(tmp_path, capture):
    findings = tmp_path / "f.jsonl"
    result = replay(tmp_path, str(capture), "--internal", "10.1.0.0/16", "--interval", "30",
                    "--findings-json", str(findings))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in findings.read_text().splitlines()]
    assert lines and all(line["end"] - line["start"] == 30 for line in lines)


def test_replay_without_campus_prefixes_says_how_to_give_them(tmp_path, capture):
    result = CliRunner().invoke(main, ["replay", str(capture), "--db", str(tmp_path / "n.db")])
    assert result.exit_code == 2 and "--internal" in result.output


def test_replay_with_a_bad_config_names_the_key(tmp_path, capture):
    config = tmp_path / "bad.toml"
    config.write_text('[campus]\ninternal = ["10.1.0.0/16"]\n[detect.rules]\npoll_ratio = "fast"\n')
    result = CliRunner().invoke(main, ["replay", str(capture), "--config", str(config)])
    assert result.exit_code == 2 and "poll_ratio" in result.output


def test_replay_reads_campus_and_thresholds_from_the_config(tmp_path, capture):
    config = tmp_path / "campus.toml"
    config.write_text(f'[campus]\ninternal = ["10.1.0.0/16"]\n[campus.groups]\nlabs = ["10.1.0.0/28"]\n'
                      f'[[sinks]]\ntype = "store"\npath = "{tmp_path / "c.db"}"\n')
    findings = tmp_path / "f.jsonl"
    result = CliRunner().invoke(main, ["replay", str(capture), "--config", str(config),
                                       "--findings-json", str(findings)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in findings.read_text().splitlines()]
    assert {line["group"] for line in lines} == {"labs"}
    assert (tmp_path / "c.db").exists()
    hosts = CliRunner().invoke(main, ["hosts", "--config", str(config)])
    assert hosts.exit_code == 0 and RUNAWAY in hosts.output, "hosts reads the store the config names"


def test_the_installed_command_runs_a_replay(tmp_path, capture):
    netmon = Path(sys.executable).with_name("netmon")
    done = subprocess.run([str(netmon), "replay", str(capture), "--internal", "10.1.0.0/16"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert RUNAWAY in done.stdout
    assert (tmp_path / "netmon-data" / "netmon.db").exists(), "default store under ./netmon-data"


SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "campus-runaway.pcap.gz"


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"shipped sample capture not found at {SAMPLE}")
def test_the_shipped_sample_shows_its_runaway_host_and_nobody_else(tmp_path):
    labels = [json.loads(line) for line in SAMPLE.with_name("campus-runaway.labels.jsonl").read_text().splitlines()]
    runaways = {label["host"] for label in labels if label.get("type") == "case"}
    findings = tmp_path / "f.jsonl"
    result = replay(tmp_path, str(SAMPLE), "--internal", "10.20.0.0/16", "--internal", "2001:db8:20::/48",
                    "--findings-json", str(findings))
    assert result.exit_code == 0, result.output
    flagged = {json.loads(line)["host"] for line in findings.read_text().splitlines()}
    assert flagged == runaways, f"expected only {runaways} flagged, got {flagged}"
    assert "client instances" in result.output and "KoD ignored" in result.output
