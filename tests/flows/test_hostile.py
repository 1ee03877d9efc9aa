"""Hostile exporters (issue 11, items 3 and 4): a flood costs its sender, memory and counters stay bounded."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

from netmon import health
from netmon.sources.netflow.collector import Collector
from netmon.sources.netflow.listener import Allowlist, Listener
from netmon.sources.sflow import SflowDecoder
from tests.flows.exporters import Collecting, wait_for
from tests.flows.support import NTP_FIELDS, ipfix, ntp_record, set_bytes, template_record

T0 = 1_765_000_000


FLOOD = Path(__file__).resolve().parents[1] / "cases" / "template-flood-one-exporter"


def _flood(domain: int) -> bytes:
    """The case's 100-template message in observation domain ``domain``: 100 new templates each time."""
    data = bytearray((FLOOD / "flood.bin").read_bytes())
    data[12:16] = domain.to_bytes(4, "big")
    return bytes(data)


def test_template_flood_from_one_exporter_does_not_evict_or_starve_another() -> None:
    collector = Collector(max_templates=1000, max_templates_per_exporter=200, max_new_templates=100, max_time_skew=600)
    collector.feed((FLOOD / "good-template.bin").read_bytes(), "192.0.2.1", arrival=T0)
    collector.flush()
    health.reset()
    for batch in range(50):  # 50 batches x 300 new templates from the flooder
        for k in range(3):
            collector.feed(_flood(batch * 3 + k), "198.51.100.66", arrival=T0)
        collector.feed((FLOOD / "good-data.bin").read_bytes(), "192.0.2.1", arrival=T0)
        flows = collector.flush().flows
        assert len(flows) == 1, f"batch {batch}: the well-behaved exporter's record was lost during the flood"
    counts = health.snapshot()
    assert counts["decode.skip.template_rate"] == 50 * 200, "past 100 new templates per batch the flooder's are dropped, counted"
    assert counts["source.netflow.exporter.198.51.100.66.template_rate"] == 50 * 200, "counted against the flooder"
    assert collector.templates.get(("192.0.2.1", 10, 1), 300) is not None, "the other exporter's template survived"
    assert len(collector.templates) <= 201


def test_listener_queue_is_bounded_in_bytes_and_a_flooder_gets_at_most_half_while_others_wait() -> None:
    listener = Listener(["127.0.0.1:0"], Allowlist([]), "netflow", max_queued_bytes=200_000)
    port = listener.ports[0]
    health.reset()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.2", 0))
            other.sendto(b"x" * 1000, ("127.0.0.1", port))
            assert wait_for(lambda: listener.queued_bytes >= 1000, 5)
            for _ in range(400):  # 4 MB offered by one sender, nobody draining the queue
                flooder.sendto(b"y" * 10_000, ("127.0.0.1", port))
            assert wait_for(lambda: health.snapshot().get("source.netflow.dropped", 0) >= 300, 10), "nothing dropped"
            assert listener.queued_bytes <= 200_000, f"queue holds {listener.queued_bytes} bytes past its bound"
            assert listener.queued_bytes <= 100_000 + 1000, "the flooder took more than half while another exporter waited"
            other.sendto(b"z" * 1000, ("127.0.0.1", port))
            assert wait_for(lambda: listener.queued_bytes >= 2000 and any(
                d.payload[:1] == b"z" for d in list(listener._queue)), 5), "the other exporter's datagram was crowded out"
    finally:
        listener.close()


def test_per_exporter_state_and_counters_stay_bounded_under_many_senders() -> None:
    collector = Collector(max_exporters=64)
    sflow = SflowDecoder(max_agents=64)
    health.reset()
    for i in range(5000):
        exporter = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        for sequence in (0, 5):  # a gap: lost datagrams counted per exporter
            collector.feed(struct.pack("!HHIIIIBBH", 5, 1, 1000, T0, 0, sequence, 0, 0, 0) + bytes(48), exporter)
            sflow.feed(struct.pack("!IIIIIII", 5, 1, i + 1, 0, sequence, 0, 0), 0.0)
    collector.flush()
    sflow.flush()
    assert len(collector.next_sequence) <= 64 and len(collector.lost) <= 64 and len(collector._halves) <= 64
    assert len(sflow.next_sequence) <= 64 and len(sflow.lost) <= 64
    names = health.snapshot()
    per_exporter = [n for n in names if n.startswith(("source.netflow.exporter.", "source.sflow.agent."))]
    assert len(per_exporter) <= 2 * 65, f"{len(per_exporter)} per-exporter counters for 5000 senders"
    assert names["source.netflow.exporter.other.lost.records"] > 0, "senders past the limit are summed under 'other'"
    assert names["source.netflow.exporters_expired"] > 0 and names["source.sflow.agents_expired"] > 0


def test_live_source_clamps_an_export_dated_years_ahead() -> None:
    health.reset()
    collecting = Collecting("netflow")
    ahead = int(time.time()) + 10 * 365 * 86400
    payload = ipfix([set_bytes(2, template_record(300, NTP_FIELDS)),
                     set_bytes(300, ntp_record("10.1.0.5", "192.0.2.1", 40000, 123, 1, 76, ahead * 1000))], export=ahead)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            out.sendto(payload, ("127.0.0.1", collecting.port))
        assert wait_for(lambda: collecting.rows, 5), "the record was dropped instead of clamped"
    finally:
        collecting.stop(settle=0)
    rows = collecting.observations()
    assert abs(rows["time"][0] - time.time()) < 60, f"event time {rows['time'][0]} not near arrival"
    assert health.snapshot()["source.netflow.exporter.127.0.0.1.time_clamped"] == 1


def test_random_udp_payloads_that_start_like_exports_never_yield_a_record() -> None:
    """Issue 15's bar: no non-export datagram ever yields a record, even with a plausible version word."""
    import numpy as np

    rng = np.random.default_rng(15)
    collector, sflow = Collector(), SflowDecoder()
    for _ in range(20_000):
        data = bytearray(rng.integers(0, 256, int(rng.integers(4, 1500)), dtype=np.uint8).tobytes())
        version = int(rng.choice([1, 5, 7, 9, 10]))
        data[0:2] = version.to_bytes(2, "big")
        if version == 10 and len(data) >= 4:
            data[2:4] = len(data).to_bytes(2, "big")  # a length that agrees: the sets must still fill it
        collector.feed(bytes(data), "192.0.2.9")
        data[0:4] = (5).to_bytes(4, "big")
        sflow.feed(bytes(data), 0.0)
    decoded, sampled = collector.flush(), sflow.flush()
    assert len(decoded.flows) + len(decoded.header_flows) == 0, "random bytes decoded as NetFlow/IPFIX records"
    assert len(sampled.flows) + len(sampled.header_flows) == 0, "random bytes decoded as sFlow samples"


def test_live_template_flood_from_one_exporter_leaves_another_exporters_records_counted() -> None:
    """Issue 11.3 on a live port: ~30,000 new templates from 127.0.0.2 while 127.0.0.1 exports NTP records."""
    collecting = Collecting("netflow", max_new_templates=200, max_templates_per_exporter=500)
    now = int(time.time())
    good_template = ipfix([set_bytes(2, template_record(300, NTP_FIELDS))], export=now)
    health.reset()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as good, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder:
            flooder.bind(("127.0.0.2", 0))
            good.sendto(good_template, ("127.0.0.1", collecting.port))
            for i in range(300):
                flooder.sendto(_flood(i), ("127.0.0.1", collecting.port))
                if i % 15 == 0:
                    record = ntp_record(f"10.1.0.{1 + i // 15}", "192.0.2.1", 40000, 123, 1, 76, now * 1000)
                    good.sendto(ipfix([set_bytes(300, record)], export=now), ("127.0.0.1", collecting.port))
        assert wait_for(lambda: sum(len(r) for r in collecting.rows) >= 20, 20), \
            f"only {sum(len(r) for r in collecting.rows)} of 20 records from the well-behaved exporter counted during the flood"
    finally:
        collecting.stop(settle=0)
    counts = health.snapshot()
    assert counts.get("source.netflow.exporter.127.0.0.2.template_rate", 0) > 0, "the flooder's excess templates were not refused"
    assert counts.get("source.netflow.exporter.127.0.0.1.template_rate", 0) == 0, "the well-behaved exporter was rate-limited"
