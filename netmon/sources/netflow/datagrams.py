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

from netmon import health
from netmon.batch import Frames

_ETHERTYPE = struct.Struct("!H")
_UDP = struct.Struct("!HHH")
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_L3_START = {1: 12, 113: 14, 276: 18}


@dataclass(frozen=True)
class Datagram:
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


def udp_datagram(frame: bytes, linktype: int, time: float) -> Datagram | None:
    """The UDP datagram in one frame, or None (counted) when there is none."""
    at = _ip_start(frame, linktype)
    if at is None or len(frame) < at + 20:
        return None
    version = frame[at] >> 4
    if version == 4:
        header = (frame[at] & 0x0F) * 4
        fragmented = int.from_bytes(frame[at + 6 : at + 8], "big") & 0x3FFF
        if frame[at + 9] != 17 or fragmented:
            return None
        source = str(ipaddress.IPv4Address(frame[at + 12 : at + 16]))
        udp = at + header
    elif version == 6 and len(frame) >= at + 40:
        if frame[at + 6] != 17:
            return None
        source = str(ipaddress.IPv6Address(frame[at + 8 : at + 24]))
        udp = at + 40
    else:
        return None
    if len(frame) < udp + 8:
        health.count("decode.skip.truncated")
        return None
    sport, dport, length = _UDP.unpack_from(frame, udp)
    payload = frame[udp + 8 : udp + max(length, 8)]
    if len(payload) < length - 8:
        health.count("decode.skip.truncated")
    return Datagram(payload, source, sport, dport, time)


def udp_datagrams(frames: Frames) -> Iterator[Datagram]:
    """Every UDP datagram in a batch of frames, in capture order."""
    data = frames.data.tobytes()
    for i in range(len(frames)):
        start = int(frames.offset[i])
        found = udp_datagram(data[start : start + int(frames.caplen[i])], int(frames.linktype[i]), float(frames.time[i]))
        if found is not None:
            yield found
