"""Flow exports inside a capture go through the flow path in ``netmon replay`` (issue 15).

A real softflowd exports an NTP scenario to a relay on loopback that records every
datagram (arrival time, bytes) into a pcap and forwards it to the live netflow
listener. Replaying that pcap must give the same per-host flow counts as the
listener that received the stream.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scapy.all import IP, UDP, Ether, Raw, wrpcap

from netmon import config, health, pipeline
from netmon.batch import Observations, addr_text, host_name
from netmon.cli import main
from netmon.config import Buffer
from netmon.runtime.sinks import ManagedSink
from tests.flows.exporters import Collecting, ntp_rows, wait_for, write_capture
from tests.flows.test_exporters import softflowd_export
from tests.flows.test_sources import Keep

INTERNAL = ("10.1.", "2001:db8:1:")


class Relay:
    """A UDP socket on loopback that keeps (arrival time, payload) of each datagram and forwards it."""

    def __init__(self, forward_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.forward = ("127.0.0.1", forward_port)
        self.seen: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            while not self._stop.is_set():
                try:
                    payload, _ = self.sock.recvfrom(65535)
                except socket.timeout:
                    continue
                self.seen.append((time.time(), payload))
                out.sendto(payload, self.forward)

    def write_pcap(self, path: Path) -> None:
        """The stream as tcpdump on the collector would have saved it (exporter -> collector port 2055)."""
        packets = []
        for arrival, payload in self.seen:
            packet = Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:0a") / IP(src="192.0.2.9", dst="192.0.2.10") / UDP(sport=50000, dport=2055) / Raw(payload)
            packet.time = arrival
            packets.append(packet)
        wrpcap(str(path), packets)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def flows_per_host(rows: np.ndarray) -> Counter:
    """Flow records per internal host (the campus side of each UDP/123 record)."""
    out: Counter = Counter()
    for r in rows:
        src, dst = addr_text(r["src_hi"], r["src_lo"]), addr_text(r["dst_hi"], r["dst_lo"])
        out[src if src.startswith(INTERNAL) else dst] += int(r["flows"])
    return out


@pytest.mark.skipif(shutil.which("softflowd") is None, reason="softflowd not installed (deploy/install.sh installs it)")
@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_replaying_a_softflowd_export_capture_gives_the_live_listeners_per_host_flow_counts(tmp_path: Path, version: str) -> None:
    ntp, background = ntp_rows()
    scenario = tmp_path / "ntp.pcap"
    write_capture(scenario, ntp, background)
    health.reset()
    live = Collecting("netflow")
    relay = Relay(live.port)
    try:
        softflowd_export(scenario, relay.port, version, tmp_path, ["-6"] if version != "5" else [])
        assert wait_for(lambda: relay.seen and health.snapshot().get("source.netflow.datagrams", 0) >= len(relay.seen), 10), \
            "the live listener did not decode every relayed datagram"
    finally:
        relay.close()
        live.stop(settle=0.2)
    exports = tmp_path / "exports.pcap"
    relay.write_pcap(exports)
    want = flows_per_host(live.observations())
    assert want and all(host.startswith(INTERNAL) for host in want), f"the live listener saw no NTP flows: {want}"

    from netmon.registry import plugin

    source = plugin("source", "pcap").build(config.plugin_config("source", {"type": "pcap", "paths": [str(exports)]}))
    rows = [item.rows for item in source.batches() if isinstance(item, Observations)]
    got = flows_per_host(np.concatenate(rows)) if rows else Counter()
    assert got == want, f"NetFlow v{version}: replayed per-host flow counts differ from the live listener's"

    settings = config.validate({
        "campus": {"internal": ["10.1.0.0/16", "2001:db8:1::/48"]},
        "detect": {"detectors": ["rules"], "checkpoint": str(tmp_path / "state.ckpt")},
        "sources": [{"type": "pcap", "paths": [str(exports)]}],
        "sinks": [],
    })
    stages = pipeline.build(settings, restore=False)
    keep = Keep()
    stages.sinks.append(ManagedSink("keep", lambda: keep, Buffer()))
    pipeline.run(stages)
    scored: Counter = Counter()
    for item in keep.scored:
        for host, flows in zip(item.intervals.host.tolist(), item.intervals.features["flows"].tolist()):
            scored[host] += int(flows)
    live_hosts: Counter = Counter()
    for host, n in want.items():
        live_hosts[host_name(host, settings.campus.ipv6_prefix)] += n
    assert scored == live_hosts, f"per-host flows scored from the replay {dict(scored)} != the live listener's {dict(live_hosts)}"


def test_netmon_replay_scores_the_flow_exports_of_a_capture(tmp_path: Path) -> None:
    """`netmon replay` on a capture of an exporter's stream scores its internal hosts (it scored 0 before)."""
    from tests.flows.support import NTP_FIELDS, ipfix, ntp_record, set_bytes, template_record

    t0 = 1_765_000_000
    records = b"".join(ntp_record(f"10.1.0.{h}", "192.0.2.1", 40000 + h, 123, 5, 380, (t0 + h) * 1000) for h in range(1, 5))
    payload = ipfix([set_bytes(2, template_record(300, NTP_FIELDS)), set_bytes(300, records)], export=t0 + 10)
    packet = Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:0a") / IP(src="192.0.2.9", dst="192.0.2.10") / UDP(sport=40000, dport=4739) / Raw(payload)
    packet.time = t0 + 10
    path = tmp_path / "exports.pcap"
    wrpcap(str(path), [packet])
    result = CliRunner().invoke(main, ["replay", str(path), "--internal", "10.1.0.0/16", "--db", str(tmp_path / "n.db")])
    assert result.exit_code == 0, result.output
    assert re.search(r"^[1-9][0-9]* intervals? scored", result.output, re.M), result.output
