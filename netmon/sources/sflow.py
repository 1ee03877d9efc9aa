"""The ``sflow`` source: sFlow v5 datagrams in, sampled frames and UDP/123 observations out.

Flow samples (format 1) and expanded flow samples (format 3) carry records;
a raw packet header record (format 1) becomes a Frame weighted by the sampling
rate, so the pipeline decodes its NTP header like a captured packet (KoD, poll,
timestamps). Sampled IPv4/IPv6 records (formats 3, 4) become flow rows when the
sample has no raw header. Counter samples are counted, never taken for traffic;
unknown samples and records are skipped by their length. sFlow carries no
absolute time: rows and frames take the datagram's arrival (or capture) time.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import structlog
from pydantic import Field

from netmon import health
from netmon.batch import Frames, Observations, addr_halves
from netmon.config import Settings
from netmon.sources.netflow.datagrams import Datagram, ip_packet
from netmon.sources.netflow.records import FLOW_DTYPE, frames_from, ntp_observations
from netmon.sources.netflow.source import FlowConfig, FlowSource, check

__all__ = ["Config", "SflowSource", "build", "check"]

log = structlog.get_logger(__name__)

#: FLOW_DTYPE ``version`` of rows that come from sFlow v5.
SFLOW_VERSION = 50
#: sFlow header_protocol -> pcap LINKTYPE (Ethernet, raw IPv4, raw IPv6).
LINKTYPES = {1: 1, 11: 228, 12: 229}

#: Bytes of Ethernet FCS an agent may strip; larger "stripped" values (some vendors
#: report frame length minus header length there) are not subtracted.
_FCS = 4
_U32 = struct.Struct("!I")
_PAIR = struct.Struct("!II")
_FLOW = struct.Struct("!IIIIIIII")
_EXPANDED = struct.Struct("!IIIIIIIIIII")
_RAW = struct.Struct("!IIII")
_IPV4 = struct.Struct("!II4s4sIIII")
_IPV6 = struct.Struct("!II16s16sIIII")
#: Sampled IPv4 (3) and IPv6 (4) records: layout and address type.
_SAMPLED = {3: (_IPV4, ipaddress.IPv4Address), 4: (_IPV6, ipaddress.IPv6Address)}


class Config(FlowConfig):
    """``[[sources]] type = "sflow"``; ``sampling`` overrides the rate per agent address."""

    type: Literal["sflow"] = "sflow"
    listen: list[str] = Field(default_factory=lambda: ["0.0.0.0:6343", "[::]:6343"], description="host:port to receive sFlow on")
    record_delay: float = Field(1.0, ge=0, description="samples are stamped on arrival, so Watermarks need little delay")


@dataclass
class Decoded:
    """One batch: sampled-record rows, rows read from raw headers (for display) and frames."""

    flows: np.ndarray
    header_flows: np.ndarray
    frames: Frames | None


class _Batch:
    """Accumulates one batch's samples before they become arrays."""

    def __init__(self) -> None:
        self.flows: list[tuple] = []
        self.header_flows: list[tuple] = []
        self.frames: list[bytes] = []
        self.wirelen: list[int] = []
        self.time: list[float] = []
        self.weight: list[float] = []
        self.linktype: list[int] = []


def _row(time: float, agent: tuple[int, int], src: str, dst: str, sport: int, dport: int, proto: int, vlan: int, size: int, rate: float) -> tuple:
    s, d = addr_halves(src), addr_halves(dst)
    return (time, time, agent[0], agent[1], s[0], s[1], d[0], d[1], sport & 0xFFFF, dport & 0xFFFF, proto & 0xFF, vlan,
            1.0, float(size), rate, SFLOW_VERSION)


def _items(data: memoryview, pos: int, count: int) -> Iterator[tuple[int, memoryview]]:
    """(format, body) of ``count`` XDR items (format, length, body) from ``pos``; a cut one ends the walk, counted."""
    for _ in range(count):
        fmt, length = _PAIR.unpack_from(data, pos)
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length:
            health.count("decode.skip.truncated")
            return
        pos += 8 + length
        yield fmt, body


class SflowDecoder:
    """sFlow v5 datagram parsing, with per-agent sequence tracking (lost datagrams)."""

    def __init__(self, sampling: dict[str, int] | None = None) -> None:
        self.override = {k: float(v) for k, v in (sampling or {}).items()}
        self.next_sequence: dict[tuple[str, int], int] = {}
        self.lost: dict[str, int] = {}
        self._batch = _Batch()

    def feed(self, data: bytes, time: float) -> None:
        """Parse one datagram received at ``time`` (UNIX s)."""
        health.count("source.sflow.datagrams")
        try:
            self._datagram(memoryview(data), time)
        except (struct.error, ValueError, IndexError):
            health.count("decode.skip.malformed")

    def flush(self) -> Decoded:
        b, self._batch = self._batch, _Batch()
        frames = None
        if b.frames:
            frames = frames_from([(b.frames, np.array(b.wirelen), np.array(b.time), np.array(b.weight))], np.array(b.linktype))
        return Decoded(np.array(b.flows, dtype=FLOW_DTYPE), np.array(b.header_flows, dtype=FLOW_DTYPE), frames)

    def _datagram(self, data: memoryview, time: float) -> None:
        if len(data) < 28:
            health.count("decode.skip.truncated")
            return
        if _U32.unpack_from(data)[0] != 5:
            health.count("decode.skip.sflow_version")
            return
        kind = _U32.unpack_from(data, 4)[0]
        size = {1: 4, 2: 16}.get(kind)
        if size is None:
            health.count("decode.skip.malformed")
            return
        agent_text = str(ipaddress.ip_address(bytes(data[8 : 8 + size])))
        pos = 8 + size
        sub_agent, sequence, _uptime, count = struct.unpack_from("!IIII", data, pos)
        pos += 16
        self._sequence(agent_text, sub_agent, sequence)
        agent = addr_halves(agent_text)
        for fmt, body in _items(data, pos, count):
            if fmt >> 12:
                health.count("decode.skip.sflow_enterprise_sample")
            elif fmt & 0xFFF in (1, 3):
                self._flow_sample(body, fmt & 0xFFF == 3, time, agent, agent_text)
            elif fmt & 0xFFF in (2, 4):
                health.count("source.sflow.counter_samples")
            else:
                health.count("decode.skip.sflow_sample")

    def _sequence(self, agent: str, sub_agent: int, sequence: int) -> None:
        key = (agent, sub_agent)
        expected = self.next_sequence.get(key)
        if expected is not None:
            gap = (sequence - expected) & 0xFFFF_FFFF
            if 0 < gap < 2**31:
                self.lost[agent] = self.lost.get(agent, 0) + gap
                health.count("source.sflow.lost.datagrams", gap)
                health.count(f"source.sflow.agent.{agent}.lost.datagrams", gap)
        self.next_sequence[key] = (sequence + 1) & 0xFFFF_FFFF

    def _flow_sample(self, body: memoryview, expanded: bool, time: float, agent: tuple[int, int], agent_text: str) -> None:
        head = _EXPANDED if expanded else _FLOW
        values = head.unpack_from(body)
        rate = float(values[3] if expanded else values[2]) or 1.0
        rate = self.override.get(agent_text, rate)
        vlan = 0
        headers: list[tuple[int, bytes, int]] = []
        sampled: list[tuple] = []
        health.count("source.sflow.flow_samples")
        for fmt, record in _items(body, head.size, values[-1]):
            if fmt == 1:
                protocol, frame_length, stripped, header_length = _RAW.unpack_from(record)
                header = bytes(record[16 : 16 + header_length])
                wire = frame_length - stripped if stripped <= _FCS else frame_length
                headers.append((protocol, header, max(wire, len(header))))
            elif fmt in _SAMPLED:
                layout, address = _SAMPLED[fmt]
                ip_len, proto, src, dst, sport, dport, _, _ = layout.unpack_from(record)
                sampled.append((ip_len, proto, address(src), address(dst), sport, dport))
            elif fmt == 1001:
                src_vlan, _, dst_vlan = struct.unpack_from("!III", record)
                vlan = (src_vlan or dst_vlan) & 0x0FFF
            else:
                health.count("source.sflow.other_records")
        b = self._batch
        for protocol, header, wirelen in headers:
            linktype = LINKTYPES.get(protocol)
            if linktype is None:
                health.count("decode.skip.sflow_header_protocol")
                continue
            b.frames.append(header)
            b.wirelen.append(wirelen)
            b.time.append(time)
            b.weight.append(rate)
            b.linktype.append(linktype)
            packet = ip_packet(header, linktype)
            if packet is not None:
                b.header_flows.append(_row(time, agent, packet.src, packet.dst, packet.sport, packet.dport, packet.proto, vlan, packet.ip_len, rate))
        if not headers:
            for ip_len, proto, src, dst, sport, dport in sampled:
                b.flows.append(_row(time, agent, str(src), str(dst), sport, dport, proto, vlan, ip_len, rate))


class SflowSource(FlowSource):
    """sFlow v5 agents."""

    name = "sflow"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.decoder = SflowDecoder(config.sampling)

    def decode(self, batch: list[Datagram]) -> tuple[Observations, Frames | None, float]:
        for datagram in batch:
            self.decoder.feed(datagram.payload, datagram.time)
        decoded = self.decoder.flush()
        return Observations(ntp_observations(decoded.flows)), decoded.frames, max(d.time for d in batch)


def build(config: Config, settings: Settings) -> SflowSource:
    return SflowSource(config)
