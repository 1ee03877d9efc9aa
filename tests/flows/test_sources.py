"""The netflow and sflow sources as the pipeline sees them: sockets, allowlist, watermarks, frames."""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

from netmon import health
from netmon.batch import OBS_DTYPE, Watermark, addr_halves
from netmon.config import ConfigError, plugin_config
from netmon.decode.encode import frames_from_observations
from netmon.decode.frames import decode_frames
from netmon.sources.sflow import SflowDecoder
from tests.flows.exporters import Collecting, wait_for
from tests.flows.support import NTP_FIELDS, ipfix, ntp_record, set_bytes, template_record

RATE = 0x52415445  # "RATE"


def kod_frame() -> bytes:
    """An Ethernet/IPv4/UDP frame of a KoD RATE reply from 192.0.2.1 to 10.1.0.5."""
    row = np.zeros(1, OBS_DTYPE)
    row["time"] = 1_700_000_000.0
    row["src_hi"], row["src_lo"] = addr_halves("192.0.2.1")
    row["dst_hi"], row["dst_lo"] = addr_halves("10.1.0.5")
    row["sport"], row["dport"] = 123, 40000
    row["version"], row["mode"], row["leap"], row["stratum"], row["ref_id"], row["packets"] = 4, 4, 3, 0, RATE, 1
    frames = frames_from_observations(row)
    return frames.data[: int(frames.caplen[0])].tobytes()


def sflow_datagram(frame: bytes, rate: int, sequence: int = 1, agent: str = "192.0.2.50") -> bytes:
    padded = frame + bytes(-len(frame) % 4)
    record = struct.pack("!IIII", 1, len(frame) + 4, 4, len(frame)) + padded
    sample = struct.pack("!IIIIIIII", 1, 7, rate, 1000, 0, 1, 2, 1) + struct.pack("!II", 1, len(record)) + record
    counters = struct.pack("!II", 2, 8) + bytes(8)
    return (struct.pack("!II4sIIII", 5, 1, socket.inet_aton(agent), 0, sequence, 1000, 2)
            + struct.pack("!II", 1, len(sample)) + sample + counters)


def test_sflow_raw_header_of_a_kod_decodes_to_ntp_fields_weighted_by_the_rate() -> None:
    decoder = SflowDecoder()
    decoder.feed(sflow_datagram(kod_frame(), rate=512), 1_700_000_100.0)
    decoded = decoder.flush()
    rows = decode_frames(decoded.frames)
    assert len(rows) == 1 and rows["ntp"][0] == 1
    assert (rows["stratum"][0], rows["leap"][0], rows["ref_id"][0]) == (0, 3, RATE), "KoD known from sampled telemetry"
    assert rows["packets"][0] == 512 and rows["time"][0] == 1_700_000_100.0
    assert len(decoded.flows) == 0, "a sample with a raw header is not also counted as a sampled IPv4 record"
    assert health.snapshot()["source.sflow.counter_samples"] == 1


def test_sflow_sequence_gaps_count_lost_datagrams_per_agent() -> None:
    decoder = SflowDecoder()
    for seq in (1, 2, 6):
        decoder.feed(sflow_datagram(kod_frame(), 1, sequence=seq), 0.0)
    assert decoder.lost == {"192.0.2.50": 3}


def test_ipfix_data_link_frame_section_decodes_to_ntp_fields() -> None:
    from netmon.sources.netflow.collector import Collector

    frame = kod_frame()
    fields = [(315, 0xFFFF), (312, 2), (153, 8)]
    record = bytes([len(frame)]) + frame + struct.pack("!HQ", len(frame), 1_700_000_000_000)
    collector = Collector({"192.0.2.9": 100})
    collector.feed(ipfix([set_bytes(2, template_record(300, fields)), set_bytes(300, record)]), "192.0.2.9")
    decoded = collector.flush()
    rows = decode_frames(decoded.frames)
    assert len(rows) == 1 and rows["ref_id"][0] == RATE and rows["packets"][0] == 100


def _send(port: int, payload: bytes, family: int = socket.AF_INET, host: str = "127.0.0.1") -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, (host, port))


def _ntp_export(export: int = 1_700_000_000) -> bytes:
    return ipfix([set_bytes(2, template_record(300, NTP_FIELDS)),
                  set_bytes(300, ntp_record("10.1.0.5", "192.0.2.1", 40000, 123, 3, 228, export * 1000))], export=export)


def test_netflow_source_emits_sampling_corrected_ntp_rows_and_watermarks_when_idle() -> None:
    collecting = Collecting("netflow", idle_watermark=0.3, record_delay=30, sampling={"127.0.0.1": 10})
    now = int(time.time())  # a live export is dated about now (older would be clamped to arrival)
    try:
        _send(collecting.port, _ntp_export(now))
        assert wait_for(lambda: collecting.rows and collecting.watermarks, 5), "no rows or no watermark"
    finally:
        collecting.stop(settle=0)
    rows = np.concatenate(collecting.rows)
    assert rows["packets"].tolist() == [30.0] and rows["bytes"].tolist() == [2280.0], "3 packets at 1-in-10 (config override)"
    assert rows["flows"].tolist() == [1] and rows["ntp"].tolist() == [0]
    mark = collecting.watermarks[0]
    assert isinstance(mark, Watermark) and now - 30 < mark.time < now - 25, "export time + idle - record_delay"


def test_netflow_source_listens_on_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    collecting = Collecting("netflow", listen=["[::1]:0"])
    try:
        _send(collecting.port, _ntp_export(), socket.AF_INET6, "::1")
        assert wait_for(lambda: collecting.rows, 5), "nothing received over IPv6"
    finally:
        collecting.stop(settle=0)


def test_exporters_outside_the_allowlist_are_counted_and_ignored() -> None:
    collecting = Collecting("netflow", exporters=["192.0.2.0/24"])
    try:
        _send(collecting.port, _ntp_export())
        assert wait_for(lambda: health.snapshot().get("source.netflow.denied", 0) >= 1, 5)
    finally:
        collecting.stop(settle=0.2)
    assert not collecting.rows


@pytest.mark.parametrize(("table", "names"), [
    ({"type": "netflow", "listen": ["2055"]}, "host:port"),
    ({"type": "netflow", "exporters": ["10.0.0.0/33"]}, "exporters"),
    ({"type": "sflow", "sampling": {"10.0.0.1": 0}}, "sampling"),
    ({"type": "netflow", "port": 2055}, "port"),
])
def test_bad_source_settings_name_the_key(table: dict, names: str) -> None:
    from netmon.config import validate

    with pytest.raises(ConfigError, match=names):
        validate({"sources": [table]})


def test_replaying_a_pcap_of_exports_decodes_every_record_without_watermarks(corpus) -> None:
    from netmon.registry import plugin

    path = corpus / "pmacct-test-automation" / "101-NFv9-CISCO-cust_primitives.traffic-00.pcap"
    source = plugin("source", "netflow").build(plugin_config("source", {"type": "netflow", "paths": [str(path)]}), None)
    items = list(source.batches())
    assert not any(isinstance(i, Watermark) for i in items), "a replay needs no watermarks"
    assert health.snapshot()["source.netflow.records"] == 51


def test_sflow_sampled_ipv4_record_without_header_becomes_a_flow_row() -> None:
    from netmon.sources.netflow.records import ntp_observations

    record = struct.pack("!II4s4sIIII", 76, 17, socket.inet_aton("10.1.0.5"), socket.inet_aton("192.0.2.1"), 40000, 123, 0, 0)
    sample = struct.pack("!IIIIIIII", 1, 7, 64, 1000, 0, 1, 2, 1) + struct.pack("!II", 3, len(record)) + record
    datagram = struct.pack("!II4sIIII", 5, 1, socket.inet_aton("192.0.2.50"), 0, 1, 1000, 1) + struct.pack("!II", 1, len(sample)) + sample
    decoder = SflowDecoder()
    decoder.feed(datagram, 1_700_000_000.0)
    decoded = decoder.flush()
    rows = ntp_observations(decoded.flows)
    assert decoded.frames is None
    assert rows["packets"].tolist() == [64.0] and rows["bytes"].tolist() == [76.0 * 64] and rows["dport"].tolist() == [123]


class Keep:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.scored: list = []

    def write(self, scored) -> None:
        self.scored.append(scored)

    def close(self) -> None:
        pass


def test_pipeline_runs_a_netflow_replay_to_scored_intervals(tmp_path) -> None:
    """The netflow source named in a config feeds aggregation and detection like any source."""
    from scapy.all import IP, UDP, Ether, wrpcap

    from netmon import config, pipeline
    from netmon.config import Buffer
    from netmon.runtime.sinks import ManagedSink

    records = b"".join(ntp_record(f"10.1.0.{h}", "192.0.2.1", 40000 + h, 123, 5, 380, (1_700_000_000 + h) * 1000) for h in range(1, 9))
    payload = ipfix([set_bytes(2, template_record(300, NTP_FIELDS)), set_bytes(300, records)], export=1_700_000_100)
    path = tmp_path / "exports.pcap"
    wrpcap(str(path), [Ether() / IP(src="192.0.2.9", dst="192.0.2.10") / UDP(sport=40000, dport=4739) / payload])
    settings = config.validate({
        "campus": {"internal": ["10.0.0.0/8"]},
        "detect": {"detectors": ["rules"], "checkpoint": str(tmp_path / "state.ckpt")},
        "sources": [{"type": "netflow", "paths": [str(path)]}],
        "sinks": [],
    })
    stages = pipeline.build(settings, restore=False)
    keep = Keep()
    stages.sinks.append(ManagedSink("keep", lambda: keep, Buffer()))
    summary = pipeline.run(stages)
    scored = keep.scored
    assert summary.intervals == 1
    hosts = scored[0].intervals
    assert sorted(hosts.host.tolist()) == [f"10.1.0.{h}" for h in range(1, 9)]
    assert hosts.features["requests_out"].tolist() == [5.0] * 8 and hosts.features["flows"].tolist() == [1.0] * 8


def test_a_listen_address_in_use_is_a_clear_error() -> None:
    from netmon.sources.netflow.listener import ListenError

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(ListenError, match=f"netflow source cannot listen on 127.0.0.1:{port}"):
            Collecting("netflow", listen=[f"127.0.0.1:{port}"])
