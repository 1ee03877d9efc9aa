"""Bad exports: counted, bounded, never a crash (DESIGN 'Bars': templates that lie, floods, orphans)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netmon import health
from netmon.sources.netflow.collector import Collector
from netmon.sources.sflow import SflowDecoder
from tests.flows.support import NTP_FIELDS, datagrams, ipfix, ntp_record, set_bytes, template_record, v9

SEEDS: list[bytes] = []
_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
for name in ("python-netflow-v9-softflowd/bitkeks-vectors.wrapped.pcap", "goflow2/goflow2-vectors.wrapped.pcap", "tcpdump/sflow-print-v6.pcap"):
    if (_CORPUS / name).exists():
        SEEDS += [d.payload for d in datagrams(_CORPUS / name)]
SEEDS.append(ipfix([set_bytes(2, template_record(300, NTP_FIELDS)), set_bytes(300, ntp_record("10.0.0.1", "192.0.2.1", 40000, 123, 1, 76, 0))]))


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A real export datagram truncated, overwritten in places, or with a length field rewritten."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["cut", "byte", "u16", "zero"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "cut":
            del data[at:]
        elif kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "u16" and at + 2 <= len(data):
            data[at : at + 2] = struct.pack("!H", draw(st.sampled_from([0, 1, 3, 4, 255, 256, 0xFFFF, draw(st.integers(0, 0xFFFF))])))
        elif kind == "zero":
            data[at : at + 8] = bytes(min(8, len(data) - at))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mangled(), min_size=1, max_size=20))
def test_mangled_exports_never_raise_and_state_stays_bounded(batch: list[bytes]) -> None:
    collector = Collector(max_templates=32, max_pending=8)
    sflow = SflowDecoder()
    for data in batch:
        collector.feed(data, "192.0.2.9")
        sflow.feed(data, 0.0)
    decoded = collector.flush()
    sflow.flush()
    assert len(collector.templates) <= 32
    assert collector.templates.pending <= 8
    assert (decoded.flows["packets"] >= 0).all()


def test_template_whose_field_count_runs_past_its_set_is_counted_and_ignored() -> None:
    lie = struct.pack("!HH", 400, 50) + struct.pack("!HH", 8, 4)  # says 50 fields, carries 1
    collector = Collector()
    collector.feed(ipfix([set_bytes(2, lie)]), "192.0.2.9")
    assert len(collector.templates) == 0
    assert health.snapshot()["decode.skip.template_malformed"] == 1
    collector.feed(v9([set_bytes(0, lie)]), "192.0.2.9")
    assert health.snapshot()["decode.skip.template_malformed"] == 2


def test_template_of_only_zero_length_fields_is_refused_not_looped_on() -> None:
    collector = Collector()
    collector.feed(ipfix([set_bytes(2, template_record(400, [(8, 0), (12, 0)])), set_bytes(400, bytes(64))]), "192.0.2.9")
    assert len(collector.flush().flows) == 0
    assert health.snapshot()["decode.skip.template_empty"] == 1


def test_template_flood_evicts_oldest_and_memory_stays_bounded() -> None:
    collector = Collector(max_templates=100, max_new_templates=10_000)
    for start in range(256, 256 + 5000, 50):
        records = b"".join(template_record(t, NTP_FIELDS) for t in range(start, start + 50))
        collector.feed(ipfix([set_bytes(2, records)]), "192.0.2.9")
    assert len(collector.templates) == 100
    assert health.snapshot()["decode.skip.template_evicted"] == 5000 - 100


def test_data_before_its_template_is_held_then_decoded_and_holding_is_bounded() -> None:
    collector = Collector(max_pending=4)
    data = set_bytes(300, ntp_record("10.0.0.1", "192.0.2.1", 40000, 123, 2, 152, 1_700_000_000_000))
    for _ in range(6):
        collector.feed(ipfix([data]), "192.0.2.9")
    assert collector.templates.pending == 4
    assert health.snapshot()["decode.skip.pending_dropped"] == 2
    collector.feed(ipfix([set_bytes(2, template_record(300, NTP_FIELDS))]), "192.0.2.9")
    flows = collector.flush().flows
    assert len(flows) == 4 and flows["packets"].sum() == 8
    assert flows["end"][0] == 1_700_000_000.0


def test_ipfix_template_withdrawal_forgets_the_template() -> None:
    collector = Collector()
    collector.feed(ipfix([set_bytes(2, template_record(300, NTP_FIELDS))]), "192.0.2.9")
    collector.feed(ipfix([set_bytes(2, struct.pack("!HH", 300, 0))]), "192.0.2.9")
    collector.feed(ipfix([set_bytes(300, ntp_record("10.0.0.1", "192.0.2.1", 40000, 123, 1, 76, 0))]), "192.0.2.9")
    assert len(collector.flush().flows) == 0
    assert collector.templates.pending == 1
    collector.feed(ipfix([set_bytes(2, template_record(300, NTP_FIELDS))]), "192.0.2.9")
    collector.feed(ipfix([set_bytes(2, struct.pack("!HH", 2, 0))]), "192.0.2.9")  # withdraw all data templates
    assert len(collector.templates) == 0


def test_templates_are_scoped_per_exporter_and_observation_domain() -> None:
    collector = Collector()
    collector.feed(ipfix([set_bytes(2, template_record(300, NTP_FIELDS))], domain=1), "192.0.2.9")
    record = set_bytes(300, ntp_record("10.0.0.1", "192.0.2.1", 40000, 123, 1, 76, 0))
    collector.feed(ipfix([record], domain=2), "192.0.2.9")
    collector.feed(ipfix([record], domain=1), "192.0.2.10")
    assert len(collector.flush().flows) == 0
    collector.feed(ipfix([record], domain=1), "192.0.2.9")
    assert len(collector.flush().flows) == 1


def test_sequence_gaps_count_lost_datagrams_per_exporter() -> None:
    collector = Collector()
    for seq in (10, 11, 15, 16):
        collector.feed(v9([], sequence=seq), "192.0.2.9")
    collector.feed(v9([], sequence=1), "192.0.2.10")
    assert collector.lost == {"192.0.2.9": 3}
    assert health.snapshot()["source.netflow.lost.datagrams"] == 3
    assert health.snapshot()["source.netflow.exporter.192.0.2.9.lost.datagrams"] == 3


def test_ipfix_sequence_counts_records_so_a_gap_is_lost_records() -> None:
    collector = Collector()
    collector.feed(ipfix([set_bytes(2, template_record(300, NTP_FIELDS))], sequence=0), "192.0.2.9")
    two = set_bytes(300, ntp_record("10.0.0.1", "192.0.2.1", 1, 123, 1, 76, 0) * 2)
    collector.feed(ipfix([two], sequence=0), "192.0.2.9")
    collector.feed(ipfix([two], sequence=2), "192.0.2.9")
    collector.feed(ipfix([two], sequence=9), "192.0.2.9")
    assert collector.lost == {"192.0.2.9": 5}


def test_variable_length_and_enterprise_fields_are_skipped_by_length() -> None:
    fields = [(8, 4), (96, 0xFFFF), (12, 4), (1, 4, 9), (7, 2), (11, 2), (4, 1), (2, 4), (82, 0xFFFF), (1, 4)]
    import ipaddress

    def record(name: bytes, long: bytes) -> bytes:
        return (ipaddress.IPv4Address("10.0.0.1").packed + bytes([len(name)]) + name + ipaddress.IPv4Address("192.0.2.1").packed
                + struct.pack("!IHHBI", 0xDEAD, 40000, 123, 17, 3) + b"\xff" + struct.pack("!H", len(long)) + long + struct.pack("!I", 228))

    collector = Collector()
    body = record(b"ntp", b"x" * 300) + record(b"", b"")
    collector.feed(ipfix([set_bytes(2, template_record(300, fields)), set_bytes(300, body)]), "192.0.2.9")
    flows = collector.flush().flows
    assert flows["packets"].tolist() == [3, 3] and flows["bytes"].tolist() == [228, 228]
    assert flows["dport"].tolist() == [123, 123]


def test_biflow_reverse_counters_become_a_second_row() -> None:
    fields = NTP_FIELDS + [(2, 8, 29305), (1, 8, 29305)]
    collector = Collector()
    rec = ntp_record("10.0.0.1", "192.0.2.1", 40000, 123, 1, 76, 0) + struct.pack("!QQ", 1, 76)
    collector.feed(ipfix([set_bytes(2, template_record(300, fields)), set_bytes(300, rec)]), "192.0.2.9")
    flows = collector.flush().flows
    assert len(flows) == 2
    assert flows["sport"].tolist() == [40000, 123] and flows["dport"].tolist() == [123, 40000]


@pytest.mark.parametrize("override", [None, 50])
def test_sampling_from_options_data_and_config_override(override: int | None) -> None:
    options = struct.pack("!HHH", 500, 2, 1) + struct.pack("!HHHH", 48, 4, 34, 4)  # samplerId scope, samplingInterval
    fields = NTP_FIELDS
    collector = Collector({"192.0.2.9": override} if override else None)
    collector.feed(ipfix([set_bytes(3, options), set_bytes(500, struct.pack("!II", 7, 100))]), "192.0.2.9")
    collector.feed(ipfix([set_bytes(2, template_record(300, fields)), set_bytes(300, ntp_record("10.0.0.1", "192.0.2.1", 1, 123, 2, 152, 0))]), "192.0.2.9")
    flows = collector.flush().flows
    assert flows["sampling"].tolist() == [float(override or 100)]


def test_template_not_announced_again_within_its_lifetime_expires() -> None:
    collector = Collector(template_lifetime=1800)
    record = set_bytes(300, ntp_record("10.0.0.1", "192.0.2.1", 40000, 123, 1, 76, 0))
    collector.feed(ipfix([set_bytes(2, template_record(300, NTP_FIELDS))], export=1_700_000_000), "192.0.2.9")
    collector.feed(ipfix([set_bytes(2, template_record(300, NTP_FIELDS))], export=1_700_001_000), "192.0.2.9")  # refreshed
    collector.feed(ipfix([record], export=1_700_002_000), "192.0.2.9")
    assert len(collector.flush().flows) == 1, "refreshed 1000 s ago: still valid"
    collector.feed(ipfix([record], export=1_700_003_000), "192.0.2.9")
    assert len(collector.flush().flows) == 0 and collector.templates.pending == 1
    assert health.snapshot()["source.netflow.template_expired"] == 1
