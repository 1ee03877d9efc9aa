"""``netmon decode``: JSON lines named like Zeek's ntp.log, a human table, and damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from netmon.cli import main
from netmon.decode.encode import frames_from_observations
from netmon.decode.ntp import KOD_RATE
from netmon.sources.pcapfile import write_pcap
from tests.decode import builders

ZEEK_FIELDS = {"version", "mode", "stratum", "poll", "precision", "root_delay", "root_disp", "ref_id",
               "ref_time", "org_time", "rec_time", "xmt_time", "num_exts"}


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    rows = builders.rows(3, stratum=[0, 0, 0], mode=[3, 4, 7], leap=[0, 3, 0], ref_id=[0, KOD_RATE, 0], ctl_code=[0, 0, 42])
    rows["src_hi"][1], rows["src_lo"][1], rows["dst_hi"][1], rows["dst_lo"][1] = rows[0][["dst_hi", "dst_lo", "src_hi", "src_lo"]]
    path = tmp_path / "x.pcap"
    write_pcap(path, frames_from_observations(rows))
    return path


def test_json_prints_one_object_per_packet_with_zeek_field_names(capture: Path) -> None:
    result = CliRunner().invoke(main, ["decode", "--json", str(capture)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert len(records) == 3
    assert ZEEK_FIELDS <= set(records[0]) and {"ts", "src", "dst", "sport", "dport", "leap", "mac_len"} <= set(records[0])
    assert records[0]["poll"] == 64.0 and records[0]["xmt_time"] == pytest.approx(0xE9000000 - 2208988800 + 0.5)
    assert (records[1]["src"], records[1]["kod"], records[1]["ref_id"]) == ("192.0.2.1", "RATE", "RATE")
    assert records[2]["mode"] == 7 and records[2]["req_code"] == 42 and "stratum" not in records[2]


def test_without_json_a_short_line_per_packet(capture: Path) -> None:
    result = CliRunner().invoke(main, ["decode", str(capture)])
    lines = result.output.splitlines()
    assert len(lines) == 3 and "KoD RATE" in lines[1] and "code 42" in lines[2]


def test_a_cut_file_prints_the_packets_before_and_fails_naming_the_offset(capture: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    content = capture.read_bytes()
    cut.write_bytes(content[:-5])
    result = CliRunner().invoke(main, ["decode", "--json", str(cut)])
    assert result.exit_code != 0
    assert len([line for line in result.output.splitlines() if line.startswith("{")]) == 2
    assert "byte offset" in result.output


REGRESSIONS = sorted(p for p in (Path(__file__).parent / "regressions").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_regression_case_decodes_to_its_expected_json(case: Path, tmp_path: Path) -> None:
    """Each folder under regressions/ is one past bug: input.hex (one Ethernet frame per line) and expected.json."""
    frames = [bytes.fromhex(line) for line in (case / "input.hex").read_text().split()]
    path = tmp_path / "case.pcap"
    path.write_bytes(builders.pcap_bytes(frames))
    result = CliRunner().invoke(main, ["decode", "--json", str(path)])
    got = [json.loads(line) for line in result.output.splitlines()]
    expected = json.loads((case / "expected.json").read_text())
    assert [{k: g.get(k) for k in e} for g, e in zip(got, expected)] == expected and len(got) == len(expected)
