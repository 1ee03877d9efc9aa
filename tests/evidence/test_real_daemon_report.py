"""The evidence report of a real chronyd pile, read as the NTP operator receiving it would.

The recording (tests/scenario/recordings/chronyd-campus-slow-pace: real chronyd daemons
piling up on 10.99.3.2 behind one address, an ntpsec server answering with KoD RATE) is
replayed and the runaway's report written. chronyd sends every request from a new port
and each copy obeys KoD on its own, so no single port "goes on after KoD": the report
must not tell the operator the host sent "0 requests after them anyway", and the
host-level finding that caught it must read in plain words, not as a detector's name.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from netmon.cli import main
from netmon.report import plain

RECORDING = Path(__file__).resolve().parents[1] / "scenario" / "recordings" / "chronyd-campus-slow-pace" / "campus.pcap.gz"
RUNAWAY = "10.99.3.2"


def test_report_of_a_real_chronyd_pile_names_it_in_plain_words_without_a_zero_after_kod(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    replayed = CliRunner().invoke(main, ["replay", str(RECORDING), "--internal", "10.99.0.0/16", "--interval", "10",
                                         "--db", str(db)])
    assert replayed.exit_code == 0, replayed.output
    assert RUNAWAY in replayed.output, f"the chronyd pile was not flagged: {replayed.output}"
    out = tmp_path / "report"
    made = CliRunner().invoke(main, ["evidence", RUNAWAY, "--db", str(db), "--out", str(out)])
    assert made.exit_code == 0, made.output
    text = (out / "report.md").read_text()
    summary, _, technical = text.partition("## Technical details")
    assert "Kiss-o'-Death packets asking it to slow down or stop" in summary, summary
    assert "0 requests after them anyway" not in summary, "a chronyd pile obeys KoD per port: '0 ... anyway' misleads"
    for detector in ("hosts.level", "hosts.growth"):
        if detector in technical:
            assert f"**{detector}.**" not in summary, f"{detector} is shown by its name, not in plain words"
            assert f"**{plain.title(detector)}.**" in summary, summary


def test_host_level_finding_in_plain_words_says_how_many_clients_and_the_kod_it_drew() -> None:
    evidence = {"clients": {"value": 27.6, "baseline": 3.8}, "level": {"value": 27.6, "baseline": 12.0},
                "kods": {"value": 256.0, "baseline": 0.0}}
    text = plain.sentence("hosts.level", evidence, "clients", "fallback")
    assert "about 28 NTP clients running at once" in text and "256 Kiss-o'-Death packets" in text, text
    quiet = plain.sentence("hosts.growth", {"clients": {"value": 9.0, "baseline": 1.0}, "steps": {"value": 8.0, "baseline": 0.0},
                                            "kods": {"value": 0.0, "baseline": 0.0}}, "clients", "fallback")
    assert "8 steps" in quiet and "about 9 running" in quiet and "Kiss-o'-Death" not in quiet, quiet
