"""Valid inputs for every decoder, built here (no corpus needed), for the fuzzers to mangle."""

from __future__ import annotations

import gzip
import struct

from tests.decode import builders
from tests.flows.support import NTP_FIELDS, ipfix, ntp_record, set_bytes, template_record, v9

#: Link types netmon decodes (Ethernet, raw IP, Linux SLL and SLL2, BSD loopback and NULL).
LINKTYPES = (1, 101, 113, 276, 0, 108)


def ip_packets() -> list[bytes]:
    """UDP/123 client requests and server replies, IPv4 and IPv6."""
    requests = builders.rows(2)
    replies = builders.rows(2, src="192.0.2.1", dst="10.1.2.3", sport=123, dport=40000, mode=4, stratum=0,
                            leap=3, ref_id=0x52415445)
    six = builders.rows(2, src="2001:db8::5", dst="2001:db8:1::1")
    return [p for r in (requests, replies, six) for p in builders.ip_packets(r)]


def frames_by_linktype() -> dict[int, list[bytes]]:
    """Each link type's frames; Ethernet ones also with one and two VLAN tags."""
    out = {kind: [builders.link_header(kind, p) + p for p in ip_packets()] for kind in LINKTYPES}
    tagged = []
    for packet in ip_packets():
        head = builders.link_header(1, packet)
        tagged.append(head[:12] + builders.vlan_tags((0x8100, 7)) + head[12:] + packet)
        tagged.append(head[:12] + builders.vlan_tags((0x88A8, 3), (0x8100, 9)) + head[12:] + packet)
    out[1] += tagged
    return out


def capture_files() -> list[bytes]:
    """pcap (both byte orders, ns), pcapng (EPB, SPB) and gzip of each."""
    ether = frames_by_linktype()[1]
    plain = [builders.pcap_bytes(ether), builders.pcap_bytes(ether, endian=">", nanosecond=True),
             builders.pcapng_bytes(ether), builders.pcapng_bytes(ether, endian=">", block="spb")]
    return plain + [gzip.compress(f, mtime=0) for f in plain]


def netflow_v5() -> bytes:
    """A NetFlow v5 export with two UDP/123 records."""
    header = struct.pack("!HHIIIIBBH", 5, 2, 1_000_000, 1_700_000_000, 0, 7, 0, 0, 0)
    record = struct.pack("!4s4s4sHHIIIIHHBBBBHHBBH", bytes([10, 1, 2, 3]), bytes([192, 0, 2, 1]), bytes(4), 1, 2,
                         3, 228, 990_000, 999_000, 40000, 123, 0, 0, 17, 0, 0, 0, 24, 24, 0)
    return header + record + record


def netflow_exports() -> list[bytes]:
    """v5, v9 and IPFIX exports: templates, data, and data with its template."""
    fields9 = [(f[0], f[1]) for f in NTP_FIELDS]
    data = ntp_record("10.0.0.1", "192.0.2.1", 40000, 123, 1, 76, 0)
    return [
        netflow_v5(),
        v9([set_bytes(0, template_record(300, fields9)), set_bytes(300, data)]),
        ipfix([set_bytes(2, template_record(300, NTP_FIELDS)), set_bytes(300, data)]),
        ipfix([set_bytes(300, data)]),
    ]


def sflow_datagram() -> bytes:
    """An sFlow v5 datagram: one flow sample carrying the raw header of an NTP request."""
    frame = frames_by_linktype()[1][0]
    header = struct.pack("!IIII", 1, len(frame), 0, len(frame)) + frame + bytes(-len(frame) % 4)
    record = struct.pack("!II", 1, len(header)) + header
    sample = struct.pack("!IIIIIIII", 1, 3, 1000, 5000, 0, 1, 2, 1) + record
    return (struct.pack("!II4sIIII", 5, 1, bytes([192, 0, 2, 9]), 0, 11, 100_000, 1)
            + struct.pack("!II", 1, len(sample)) + sample)
