"""Regression cases kept as files under tests/cases/<name>/ (input bytes, expected output, README).

One test per case, named after the behaviour it pins (issues 11 and 15).
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from netmon import health
from netmon.batch import addr_text
from netmon.cli import main
from netmon.sources.netflow.collector import Collector
from netmon.sources.netflow.listing import flow_records
from tests.flows.exporters import Collecting, wait_for
from tests.flows.support import datagrams

CASES = Path(__file__).resolve().parents[1] / "cases"


def case(name: str) -> Path:
    return CASES / name


def expected(name: str):
    return json.loads((case(name) / "expected.json").read_text())


def test_quic_and_stun_datagrams_yield_no_flow_record_from_a_file() -> None:
    path = case("quic-and-stun-are-not-exports") / "input.pcap"
    health.reset()
    assert flow_records(path) == [], "ordinary UDP (QUIC, STUN) decoded as flow records"
    skipped = {k: v for k, v in health.snapshot().items() if k.startswith("decode.skip.")}
    assert sum(skipped.values()) >= expected("quic-and-stun-are-not-exports")["datagrams"], f"every datagram is a counted skip: {skipped}"
    result = CliRunner().invoke(main, ["decode", "--flows", str(path)])
    assert result.exit_code == 0 and result.output == "", result.output


def test_quic_and_stun_datagrams_yield_no_flow_record_on_live_ports() -> None:
    payloads = [d.payload for d in datagrams(case("quic-and-stun-are-not-exports") / "input.pcap")]
    health.reset()
    netflow, sflow = Collecting("netflow"), Collecting("sflow")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            for payload in payloads:
                out.sendto(payload, ("127.0.0.1", netflow.port))
                out.sendto(payload, ("127.0.0.1", sflow.port))
        received = lambda: health.snapshot().get("source.netflow.datagrams", 0) + health.snapshot().get("source.sflow.datagrams", 0)
        assert wait_for(lambda: received() >= 2 * len(payloads), 10), f"only {received()} of {2 * len(payloads)} datagrams decoded"
    finally:
        netflow.stop(settle=0)
        sflow.stop(settle=0)
    assert len(netflow.observations()) == 0 and len(sflow.observations()) == 0, "a non-export datagram became observations"


def test_netflow_v7_records_decode_with_sysuptime_times() -> None:
    collector = Collector()
    assert collector.feed((case("netflow-v7") / "input.bin").read_bytes(), "192.0.2.9")
    rows = collector.flush().flows
    want = expected("netflow-v7")
    assert len(rows) == len(want)
    for row, w in zip(rows, want):
        got = {"src": addr_text(row["src_hi"], row["src_lo"]), "dst": addr_text(row["dst_hi"], row["dst_lo"]),
               "sport": int(row["sport"]), "dport": int(row["dport"]), "proto": int(row["proto"]), "packets": int(row["packets"]),
               "bytes": int(row["bytes"]), "version": int(row["version"])}
        assert got == {k: w[k] for k in got}, f"v7 record fields: {got} != {w}"
        assert row["start"] == pytest.approx(w["start"]) and row["end"] == pytest.approx(w["time"]), "v7 times from sysUptime"


def test_netflow_v7_with_a_count_that_disagrees_with_its_length_is_refused() -> None:
    data = bytearray((case("netflow-v7") / "input.bin").read_bytes())
    data[3] = 2  # says 2 records, carries 3
    collector = Collector()
    health.reset()
    assert not collector.feed(bytes(data), "192.0.2.9")
    assert len(collector.flush().flows) == 0 and health.snapshot()["decode.skip.export_length"] == 1


def test_cut_capture_exits_1_in_decode_and_replay(tmp_path: Path) -> None:
    cut = str(case("cut-capture-exits-1") / "cut.pcap")
    decoded = CliRunner().invoke(main, ["decode", cut])
    assert decoded.exit_code == 1 and "cut capture" in decoded.output, decoded.output
    assert decoded.output.count("\n") > 10, "packets before the fault are printed"
    replayed = CliRunner().invoke(main, ["replay", cut, "--internal", "10.1.0.0/16", "--db", str(tmp_path / "n.db")])
    assert replayed.exit_code == 1, f"replay of a cut capture must not exit 0: {replayed.output}"
    assert "intervals scored" in replayed.output and "cut capture" in replayed.output, "what precedes the fault is replayed and reported"


def test_replay_of_garbage_exits_1(tmp_path: Path) -> None:
    garbage = str(case("cut-capture-exits-1") / "garbage.pcap")
    result = CliRunner().invoke(main, ["replay", garbage, "--internal", "10.0.0.0/8", "--db", str(tmp_path / "n.db")])
    assert result.exit_code == 1 and "not a pcap" in result.output, result.output
    assert CliRunner().invoke(main, ["decode", garbage]).exit_code == 1


def test_export_dated_10_years_ahead_does_not_move_event_time() -> None:
    want = expected("export-dated-10-years-ahead")
    collector = Collector(max_time_skew=want["max_time_skew"])
    health.reset()
    assert collector.feed((case("export-dated-10-years-ahead") / "input.bin").read_bytes(), "192.0.2.9", arrival=want["arrival"])
    rows = collector.flush().flows
    low, high = want["record_time_within"]
    assert len(rows) == want["records"], "the record is kept, not dropped"
    assert low <= rows["end"][0] <= high and low <= rows["start"][0] <= high, f"record time {rows['end'][0]} outside the sane window"
    assert collector.last_export == want["arrival"], "event time follows the arrival, not the datagram's date"
    counts = health.snapshot()
    assert counts["source.netflow.time_clamped"] == want["time_clamped"]
    assert counts["source.netflow.exporter.192.0.2.9.time_clamped"] == want["time_clamped"], "counted per exporter"


def test_record_times_years_ahead_of_a_sane_export_are_clamped() -> None:
    from tests.flows.support import NTP_FIELDS, ipfix, ntp_record, set_bytes, template_record

    now = 1_765_000_000
    record = ntp_record("10.1.0.5", "192.0.2.1", 40000, 123, 1, 76, (now + 10 * 365 * 86400) * 1000)
    collector = Collector(max_time_skew=600)
    health.reset()
    collector.feed(ipfix([set_bytes(2, template_record(300, NTP_FIELDS)), set_bytes(300, record)], export=now), "192.0.2.9", arrival=now)
    rows = collector.flush().flows
    assert rows["end"].tolist() == [now], "a flowEndMilliseconds years ahead takes the export time"
    assert health.snapshot()["source.netflow.exporter.192.0.2.9.records_time_clamped"] == 1


def test_ipfix_vlanid_reduced_size_decodes_without_overflow() -> None:
    collector = Collector()
    assert collector.feed((case("ipfix-vlanid-reduced-size") / "input.bin").read_bytes(), "192.0.2.9")
    rows = collector.flush().flows
    want = expected("ipfix-vlanid-reduced-size")
    got = [{"src": addr_text(r["src_hi"], r["src_lo"]), "dst": addr_text(r["dst_hi"], r["dst_lo"]), "vlan": int(r["vlan"])} for r in rows]
    assert got == want


@pytest.mark.parametrize("width", [1, 2, 3, 5, 7, 8, 9, 16])
def test_every_field_width_of_every_element_netmon_reads_decodes_or_is_skipped(width: int) -> None:
    """Reduced-size (and oversize) encodings of each information element netmon reads never raise."""
    from netmon.sources.netflow.fields import ROLES
    from tests.flows.support import ipfix, set_bytes, template_record

    for (pen, ie), role in ROLES.items():
        if pen:
            continue
        fields = [(8, 4), (12, 4), (4, 1), (7, 2), (11, 2), (ie, width)]
        body = bytes([10, 1, 0, 5, 192, 0, 2, 1, 17, 0x9C, 0x40, 0, 123]) + bytes(range(1, width + 1))
        for ntp_only in (False, True):
            collector = Collector(ntp_only=ntp_only, max_time_skew=600)
            collector.feed(ipfix([set_bytes(2, template_record(300, fields)), set_bytes(300, body)], export=1_765_000_000),
                           "192.0.2.9", arrival=1_765_000_000)
            decoded = collector.flush()
            assert len(decoded.flows) + len(decoded.observations) + len(decoded.header_flows) <= 2, f"{role} in {width} bytes"
            assert np.isfinite(decoded.flows["end"]).all() and np.isfinite(decoded.observations["time"]).all(), \
                f"{role} in {width} bytes gave a non-finite time"


def test_sll2_export_capture_decodes_with_the_one_packet_parser() -> None:
    records = flow_records(case("sll2-export-capture") / "input.pcap")
    want = expected("sll2-export-capture")
    assert [{k: r[k] for k in want[0]} for r in records] == want, "an export captured with tcpdump -i any yields its record"


def test_wire_version_modules_do_not_import_the_collector() -> None:
    """Data flows one way: v5/v9/ipfix parse bytes and return exports; only the collector holds state."""
    root = Path(__file__).resolve().parents[2] / "netmon" / "sources" / "netflow"
    for name in ("v5.py", "v9.py", "ipfix.py", "export.py"):
        text = (root / name).read_text()
        assert "collector" not in text.replace("Collector`", "").split('"""', 2)[-1].lower(), f"{name} refers to the collector"


def test_flow_code_defines_no_l2_parser_or_kod_of_its_own() -> None:
    root = Path(__file__).resolve().parents[2] / "netmon"
    flow_files = [*(root / "sources" / "netflow").glob("*.py"), root / "sources" / "sflow.py"]
    for path in flow_files:
        text = path.read_text()
        assert "ethertype" not in text.lower() and "0x86dd" not in text.lower(), f"{path.name} parses link layers (use decode.packets)"
        assert not re.search(r"def \w*kod|kod\w*\s*=|stratum\W*==\W*0", text, re.IGNORECASE), f"{path.name} defines KoD (decode.ntp owns it)"


def test_template_kept_across_udp_sessions_of_one_exporter() -> None:
    """The documented template scope: (exporter address, observation domain), whatever the source port."""
    folder = case("template-kept-across-udp-sessions")
    want = expected("template-kept-across-udp-sessions")
    collecting = Collecting("netflow")
    try:
        for name in ("template.bin", "data.bin"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as session:  # a new source port each time
                session.sendto((folder / name).read_bytes(), ("127.0.0.1", collecting.port))
        assert wait_for(lambda: collecting.rows, 5), "data from a second UDP session did not find the template of the first"
    finally:
        collecting.stop(settle=0)
    rows = collecting.observations()
    assert len(rows) == want["records"] and addr_text(rows["src_hi"][0], rows["src_lo"][0]) == want["src"]
    assert rows["packets"][0] == want["packets"]


def test_replay_routes_exports_by_the_configured_ports_only() -> None:
    from netmon.batch import Observations
    from netmon.config import plugin_config
    from netmon.registry import plugin

    path = str(case("sll2-export-capture") / "input.pcap")

    def observations(**ports) -> int:
        source = plugin("source", "pcap").build(plugin_config("source", {"type": "pcap", "paths": [path], **ports}))
        return sum(len(item) for item in source.batches() if isinstance(item, Observations))

    assert observations() == 1, "an export to 4739 (IPFIX) is routed by default"
    assert observations(netflow_ports=[]) == 0, "netflow_ports = [] turns routing off"
    assert observations(netflow_ports=[9999]) == 0, "only the configured ports are exports"
