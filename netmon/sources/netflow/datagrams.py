"""UDP datagrams (payload, sender address, port, time) out of captured frames.

A pcap of export traffic holds Ethernet/IP/UDP frames around each export
datagram; this peels that outer layer, minimal on purpose (Ethernet with 802.1Q
tags, Linux cooked, BSD loopback and raw IP; unfragmented IPv4 and IPv6 without
extension headers). Anything else is a counted skip.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from netmon import health
from netmon.batch import Frames

_ETHERTYPE = struct.Struct("!H")
_UDP = struct.Struct("!HHH")
_PORTS = struct.Struct("!HH")
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_L3_START = {1: 12, 113: 14, 276: 18}


class Datagram(NamedTuple):
    """One UDP payload with its sender (address text, port), receiver port and time (UNIX s)."""

    payload: bytes
    source: str
    sport: int
    dport: int
    time: float


def _ip_start(frame: bytes, linktype: int) -> int | None:
    """Offset of the IP header in a frame, or None when it carries no IP."""
    if linktype in (101, 12, 14, 228, 229):
        return 0
    if linktype == 0:
        return 4
    at = _L3_START.get(linktype)
    if at is None or len(frame) < at + 2:
        return None
    ethertype = _ETHERTYPE.unpack_from(frame, at)[0]
    while ethertype in _VLAN_TYPES and len(frame) >= at + 6:
        at += 4
        ethertype = _ETHERTYPE.unpack_from(frame, at)[0]
    return at + 2 if ethertype in (0x0800, 0x86DD) else None


@dataclass(frozen=True)
class Packet:
    """The IP and transport fields of one frame: addresses as text, L4 offset, IP length (bytes)."""

    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    l4: int
    ip_len: int


def ip_packet(frame: bytes, linktype: int) -> Packet | None:
    """IP addresses, protocol and ports of one frame (ports 0 unless TCP/UDP), or None."""
    at = _ip_start(frame, linktype)
    if at is None or len(frame) < at + 20:
        return None
    version = frame[at] >> 4
    if version == 4:
        fragmented = int.from_bytes(frame[at + 6 : at + 8], "big") & 0x3FFF
        src, dst = frame[at + 12 : at + 16], frame[at + 16 : at + 20]
        proto, l4, ip_len = frame[at + 9], at + (frame[at] & 0x0F) * 4, int.from_bytes(frame[at + 2 : at + 4], "big")
    elif version == 6 and len(frame) >= at + 40:
        src, dst = frame[at + 8 : at + 24], frame[at + 24 : at + 40]
        proto, l4, ip_len = frame[at + 6], at + 40, 40 + int.from_bytes(frame[at + 4 : at + 6], "big")
        fragmented = 0
    else:
        return None
    sport = dport = 0
    if proto in (6, 17) and not fragmented and len(frame) >= l4 + 4:
        sport, dport = _PORTS.unpack_from(frame, l4)
    return Packet(str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), proto, sport, dport, l4, ip_len)


def udp_datagram(frame: bytes, linktype: int, time: float) -> Datagram | None:
    """The UDP datagram in one unfragmented frame, or None when there is none."""
    packet = ip_packet(frame, linktype)
    if packet is None or packet.proto != 17 or packet.sport == packet.dport == 0:
        return None
    if len(frame) < packet.l4 + 8:
        health.count("decode.skip.truncated")
        return None
    length = _UDP.unpack_from(frame, packet.l4)[2]
    payload = frame[packet.l4 + 8 : packet.l4 + max(length, 8)]
    if len(payload) < length - 8:
        health.count("decode.skip.truncated")
    return Datagram(payload, packet.src, packet.sport, packet.dport, time)


def udp_datagrams(frames: Frames) -> Iterator[Datagram]:
    """Every UDP datagram in a batch of frames, in capture order."""
    data = frames.data.tobytes()
    for i in range(len(frames)):
        start = int(frames.offset[i])
        found = udp_datagram(data[start : start + int(frames.caplen[i])], int(frames.linktype[i]), float(frames.time[i]))
        if found is not None:
            yield found
