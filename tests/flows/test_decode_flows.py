"""``netmon decode FILE --flows --json``: every record of an export capture, comparable with a peer's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from netmon.commands.decode import command
from tests.flows.support import tshark_keys


def _run(*args: str) -> list[str]:
    result = CliRunner().invoke(command, list(args))
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_flows_json_prints_every_record_as_tshark_decodes_it(corpus: Path) -> None:
    pcap = corpus / "pmacct-test-automation" / "101-NFv9-CISCO-cust_primitives.traffic-00.pcap"
    records = [json.loads(line) for line in _run("--flows", "--json", str(pcap))]
    assert {"time", "exporter", "src", "dst", "sport", "dport", "proto", "packets", "bytes", "sampling"} <= set(records[0])
    ours = Counter((r["src"], r["dst"], r["sport"], r["dport"], r["proto"], r["packets"], r["bytes"]) for r in records)
    assert ours == tshark_keys(pcap.with_name(pcap.name.replace(".pcap", ".tshark.json")))
    assert all(r["exporter"] == records[0]["exporter"] for r in records)


def test_flows_lists_sflow_raw_header_samples_with_their_rate(corpus: Path) -> None:
    lines = _run("--flows", str(corpus / "tcpdump" / "sflow_expanded.pcap"))
    assert lines == ["1672326228.558 49.49.49.49 52.52.52.52:22 > 53.53.53.53:52237 proto 6 packets 1 bytes 104 sampling 1/1000"]


def test_flows_lists_all_protocols_not_only_ntp(corpus: Path) -> None:
    records = [json.loads(line) for line in _run("--flows", "--json", str(corpus / "akvorado" / "netflow" / "nfv5.pcap"))]
    assert len(records) == 29 and {r["proto"] for r in records} >= {6, 17}
