"""Helpers for the flow tests: feed pcaps of export traffic to the decoders, read peer outputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from netmon.batch import addr_text
from netmon.sources.netflow.collector import Collector, Decoded
from netmon.sources.netflow.datagrams import Datagram, udp_datagrams
from netmon.sources.pcapfile import read_frames
from netmon.sources.sflow import SflowDecoder

FlowKey = tuple[str, str, int, int, int, int, int]


def datagrams(path: Path) -> list[Datagram]:
    """Every UDP datagram of a pcap, in order."""
    return [d for frames in read_frames(path) for d in udp_datagrams(frames)]


def collect(paths: list[Path], exporter: str | None = None, collector: Collector | None = None) -> Decoded:
    """Feed pcaps in order to one collector (optionally as one exporter) and flush."""
    collector = collector or Collector()
    for path in paths:
        for d in datagrams(path):
            collector.feed(d.payload, exporter or d.source)
    return collector.flush()


def sflow(paths: list[Path]):
    decoder = SflowDecoder()
    for path in paths:
        for d in datagrams(path):
            decoder.feed(d.payload, d.time)
    return decoder.flush()


def keys(rows: np.ndarray) -> Counter[FlowKey]:
    """Multiset of (src, dst, sport, dport, proto, packets, bytes) of flow rows."""
    return Counter(
        (addr_text(r["src_hi"], r["src_lo"]), addr_text(r["dst_hi"], r["dst_lo"]), int(r["sport"]), int(r["dport"]),
         int(r["proto"]), int(r["packets"]), int(r["bytes"]))
        for r in rows
    )


_ADDRESSES = ("cflow.srcaddr", "cflow.srcaddr_v6", "cflow.srcaddrv6")


def _tshark_flows(node: Any, out: list[dict[str, str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith(("Flow ", "pdu ")) and isinstance(value, dict) and any(a in value for a in _ADDRESSES):
                out.append(value)
            else:
                _tshark_flows(value, out)
    elif isinstance(node, list):
        for value in node:
            _tshark_flows(value, out)


def _first(flow: dict[str, Any], *names: str, default: str = "0") -> str:
    """The first of ``names`` present and not an all-zero address."""
    for name in names:
        value = flow.get(name)
        value = value[0] if isinstance(value, list) else value
        if value is not None and value not in ("0.0.0.0", "::"):
            return value
    return default


def tshark_keys(path: Path) -> Counter[FlowKey]:
    """The same multiset from a corpus ``.tshark.json`` (tshark's cflow decode)."""
    found: list[dict[str, str]] = []
    for frame in json.loads(path.read_text()):
        _tshark_flows(frame["_source"]["layers"].get("cflow", {}), found)
    return Counter(
        (_first(f, "cflow.srcaddr_v6", "cflow.srcaddrv6", "cflow.srcaddr", default="0.0.0.0"), _first(f, "cflow.dstaddr_v6", "cflow.dstaddrv6", "cflow.dstaddr", default="0.0.0.0"),
         int(_first(f, "cflow.srcport")), int(_first(f, "cflow.dstport")), int(_first(f, "cflow.protocol")),
         int(_first(f, "cflow.packets", "cflow.packets64", "cflow.permanent_packets")), int(_first(f, "cflow.octets", "cflow.octets64", "cflow.permanent_octets")))
        for f in found
    )


# --- crafting export datagrams (tests write their own, field by field) ------------------
import struct  # noqa: E402


def set_bytes(set_id: int, body: bytes) -> bytes:
    return struct.pack("!HH", set_id, 4 + len(body)) + body


def template_record(template_id: int, fields: list[tuple[int, int]] | list[tuple[int, int, int]]) -> bytes:
    """An IPFIX/v9 template record; fields are (ie, length) or (ie, length, enterprise)."""
    out = struct.pack("!HH", template_id, len(fields))
    for f in fields:
        if len(f) == 3 and f[2]:
            out += struct.pack("!HHI", f[0] | 0x8000, f[1], f[2])
        else:
            out += struct.pack("!HH", f[0], f[1])
    return out


def ipfix(sets: list[bytes], export: int = 1_700_000_000, sequence: int = 0, domain: int = 1) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIII", 10, 16 + len(body), export, sequence, domain) + body


def v9(sets: list[bytes], export: int = 1_700_000_000, uptime: int = 1_000_000, sequence: int = 0, source: int = 1) -> bytes:
    return struct.pack("!HHIIII", 9, len(sets), uptime, export, sequence, source) + b"".join(sets)


#: A minimal IPFIX template for NTP-relevant records: src, dst, sport, dport, proto, packets, bytes, end ms.
NTP_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 8), (1, 8), (153, 8)]


def ntp_record(src: str, dst: str, sport: int, dport: int, packets: int, octets: int, end_ms: int, proto: int = 17) -> bytes:
    import ipaddress

    return (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack("!HHBQQQ", sport, dport, proto, packets, octets, end_ms))
