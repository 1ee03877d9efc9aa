"""L2-L4: every link type, tags, IPv6 extension headers, fragments and truncation; skips counted by reason."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmon import health
from netmon.batch import addr_text
from netmon.decode import packets
from netmon.decode.frames import decode_frames
from tests.decode import builders

V4 = builders.ip_packets(builders.rows(1, stratum=2))[0]
V6 = builders.ip_packets(builders.rows(1, src="2001:db8::1", dst="2001:db8:ffff::123"))[0]


def _skips() -> dict[str, float]:
    return {k.removeprefix("decode.skip."): v for k, v in health.snapshot().items() if k.startswith("decode.skip.")}


def _decode(packets: list[bytes], linktype: int = 1) -> np.ndarray:
    return decode_frames(builders.frames(packets, linktype))


LINK_CASES = [(lt, p) for lt in (1, 113, 276, 101, 12, 14, 0, 108) for p in ("ipv4", "ipv6")] + [(228, "ipv4"), (229, "ipv6")]


@pytest.mark.parametrize("linktype, version", LINK_CASES)
def test_every_supported_link_type_yields_the_same_ntp_row(linktype: int, version: str) -> None:
    packet = V4 if version == "ipv4" else V6
    rows = _decode([builders.link_header(linktype, packet) + packet], linktype)
    assert len(rows) == 1, f"linktype {linktype}: {_skips()}"
    expected = "10.1.2.3" if packet is V4 else "2001:db8::1"
    assert addr_text(rows["src_hi"][0], rows["src_lo"][0]) == expected
    assert (rows["sport"][0], rows["dport"][0], rows["mode"][0]) == (40000, 123, 3)
    assert rows["bytes"][0] == len(packet)


def test_an_unknown_link_type_is_counted_and_skipped() -> None:
    assert len(_decode([V4], linktype=147)) == 0
    assert _skips() == {"unknown_linktype": 1}


@pytest.mark.parametrize(
    "tags, outer",
    [((( 0x8100, 42),), 42), (((0x88A8, 300), (0x8100, 42)), 300), (((0x9100, 7), (0x8100, 8)), 7)],
    ids=["802.1Q", "QinQ-802.1ad", "QinQ-9100"],
)
def test_vlan_tags_are_stepped_over_and_the_outer_id_kept(tags: tuple, outer: int) -> None:
    header = builders.link_header(1, V4)
    frame = header[:12] + builders.vlan_tags(*tags) + header[12:] + V4
    rows = _decode([frame])
    assert len(rows) == 1 and rows["vlan"][0] == outer


def _with_ipv4_options(packet: bytes) -> bytes:
    header = bytearray(packet[:20])
    header[0] = 0x46
    header[2:4] = struct.pack(">H", len(packet) + 4)
    return bytes(header) + b"\x01\x01\x01\x00" + packet[20:]


def test_ipv4_options_move_the_udp_header() -> None:
    packet = _with_ipv4_options(V4)
    rows = _decode([builders.link_header(1, packet) + packet])
    assert len(rows) == 1 and rows["stratum"][0] == 2 and rows["bytes"][0] == len(packet)


@pytest.mark.parametrize("flags_offset", [0x2000, 0x0010, 0x2010], ids=["first", "last", "middle"])
def test_ipv4_fragments_are_counted_and_skipped(flags_offset: int) -> None:
    packet = bytearray(V4)
    packet[6:8] = struct.pack(">H", flags_offset)
    assert len(_decode([builders.link_header(1, V4) + bytes(packet)])) == 0
    assert _skips() == {"fragment": 1}


def _ipv6_with(extensions: list[tuple[int, bytes]]) -> bytes:
    """V6 with extension headers (type, body) chained in before UDP."""
    header = bytearray(V6[:40])
    chain = b""
    kinds = [kind for kind, _ in extensions] + [17]
    for (kind, body), following in zip(extensions, kinds[1:]):
        if kind == 44:
            chain += bytes([following, 0]) + body
        else:
            chain += bytes([following, (len(body) + 2) // 8 - 1]) + body
    header[6] = kinds[0]
    header[4:6] = struct.pack(">H", len(V6) - 40 + len(chain))
    return bytes(header) + chain + V6[40:]


def test_ipv6_hop_by_hop_and_destination_options_are_stepped_over() -> None:
    packet = _ipv6_with([(0, bytes(6)), (60, bytes(14))])
    rows = _decode([builders.link_header(1, packet) + packet])
    assert len(rows) == 1 and rows["mode"][0] == 3


def test_ipv6_atomic_fragment_is_decoded_but_a_real_fragment_is_skipped() -> None:
    atomic = _ipv6_with([(44, struct.pack(">HI", 0, 1))])
    fragment = _ipv6_with([(44, struct.pack(">HI", 1, 1))])  # M bit set
    rows = _decode([builders.link_header(1, p) + p for p in (atomic, fragment)])
    assert len(rows) == 1
    assert _skips() == {"fragment": 1}


@pytest.mark.parametrize("keep, reason", [(14 + 10, "truncated"), (14 + 20 + 6, "truncated"), (14 + 20 + 8 + 20, "truncated")])
def test_frames_cut_by_the_snap_length_are_counted_as_truncated(keep: int, reason: str) -> None:
    frame = builders.link_header(1, V4) + V4
    assert len(_decode([frame[:keep]])) == 0
    assert _skips() == {reason: 1}


def test_other_traffic_is_filtered_and_counted_as_not_udp123() -> None:
    other = builders.ip_packets(builders.rows(3, sport=5353, dport=5353))
    arp = bytes.fromhex("ffffffffffff0200000000010806") + bytes(28)
    frames = [builders.link_header(1, p) + p for p in other] + [arp, builders.link_header(1, V4) + V4]
    rows = _decode(frames)
    assert len(rows) == 1
    assert _skips() == {"not_udp123": 3, "not_ip": 1}


def test_weight_scales_packets_and_bytes() -> None:
    frames = builders.frames([builders.link_header(1, V4) + V4])
    frames.weight[:] = 1000.0
    rows = decode_frames(frames)
    assert rows["packets"][0] == 1000.0 and rows["bytes"][0] == 1000.0 * len(V4)


@settings(max_examples=150, deadline=None)
@given(payloads=st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=20))
def test_any_payload_on_port_123_is_decoded_or_counted_never_a_crash(payloads: list[bytes]) -> None:
    health.reset()
    packets = []
    for payload in payloads:
        packet = bytearray(V4[:28]) + payload
        packet[2:4] = struct.pack(">H", len(packet))
        packet[24:26] = struct.pack(">H", 8 + len(payload))
        packets.append(builders.link_header(1, bytes(packet)) + bytes(packet))
    rows = _decode(packets)
    skipped = sum(_skips().values())
    assert len(rows) + skipped == len(payloads), "every frame is either a row or one counted skip"
    assert set(_skips()) <= {"not_ntp", "bad_extension", "truncated", "bad_udp"}


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=0, max_size=400), linktype=st.sampled_from([1, 113, 276, 101, 0, 108]))
def test_random_bytes_as_a_frame_never_crash(data: bytes, linktype: int) -> None:
    health.reset()
    rows = _decode([data], linktype)
    assert len(rows) + sum(_skips().values()) == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 70000), max_size=50), st.lists(st.integers(0, 70000), max_size=12))
def test_the_few_values_filter_finds_what_isin_finds(values: list[int], wanted: list[int]) -> None:
    column = np.asarray(values, dtype=np.int64)
    expected = np.isin(column, wanted)
    assert np.array_equal(packets._one_of(column, tuple(wanted)), expected), f"{values} in {wanted}"
