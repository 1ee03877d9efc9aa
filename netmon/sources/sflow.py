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
from netmon.sources.netflow.datagrams import Datagram
from netmon.sources.netflow.incapture import SFLOW_RECORD_DELAY
from netmon.sources.netflow.records import FLOW_DTYPE, fill_from_frames, frames_from, ntp_observations
from netmon.sources.netflow.state import MAX_EXPORTERS, PerExporter, Recent
from netmon.sources.netflow.source import FlowConfig, FlowSource, check


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
    record_delay: float = Field(SFLOW_RECORD_DELAY, ge=0, description="samples are stamped on arrival, so Watermarks need little delay")


@dataclass
class Decoded:
    """One batch: sampled-record rows, rows read from raw headers (for display) and frames."""

    flows: np.ndarray
    header_flows: np.ndarray
    frames: Frames | None


class Invalid(ValueError):
    """A datagram that is not a well-formed sFlow v5 datagram; ``reason`` names the skip counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Batch:
    """Accumulates one batch's samples before they become arrays."""

    def __init__(self) -> None:
        self.flows: list[tuple] = []
        self.frames: list[bytes] = []
        self.wirelen: list[int] = []
        self.time: list[float] = []
        self.weight: list[float] = []
        self.linktype: list[int] = []
        self.header_meta: list[tuple] = []

    def extend(self, other: "_Batch") -> None:
        for name, values in vars(other).items():
            getattr(self, name).extend(values)


def _row(time: float, agent: tuple[int, int], src: str, dst: str, sport: int, dport: int, proto: int, vlan: int, size: int, rate: float) -> tuple:
    s, d = addr_halves(src), addr_halves(dst)
    return (time, time, agent[0], agent[1], s[0], s[1], d[0], d[1], sport & 0xFFFF, dport & 0xFFFF, proto & 0xFF, vlan,
            1.0, float(size), rate, SFLOW_VERSION)


def _items(data: memoryview, pos: int, end: int, count: int, exact: bool = True) -> Iterator[tuple[int, memoryview]]:
    """(format, body) of ``count`` XDR items (format, length, body) in ``data[pos:end]``.

    Raises :class:`Invalid` when an item runs past ``end`` or (``exact``) the items
    do not end at ``end``: sFlow says
    how long everything is, and a datagram that disagrees with itself is not sFlow.
    The samples of a datagram need not reach its end (sFlow has no datagram length
    and some agents leave bytes behind, as tshark and akvorado accept): counted.
    """
    if count > (end - pos) // 8:
        raise Invalid("sflow_count")
    for _ in range(count):
        if pos + 8 > end:
            raise Invalid("sflow_length")
        fmt, length = _PAIR.unpack_from(data, pos)
        if pos + 8 + length > end:
            raise Invalid("sflow_length")
        yield fmt, data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    if pos != end:
        if exact:
            raise Invalid("sflow_length")
        health.count("decode.skip.sflow_trailing_bytes")


class SflowDecoder:
    """sFlow v5 datagram parsing, with per-agent sequence tracking (lost datagrams).

    A datagram is taken whole or not at all: it is parsed into a private batch
    and joins the output only when every sample and record length agrees with the
    datagram's length. Anything else is a counted skip (``decode.skip.sflow_*``),
    so ordinary UDP that reaches the port (or a capture's) never yields a record.
    Per-agent state is kept for the ``max_agents`` most recently heard agents.
    """

    def __init__(self, sampling: dict[str, int] | None = None, max_agents: int = MAX_EXPORTERS) -> None:
        self.override = {k: float(v) for k, v in (sampling or {}).items()}
        self.next_sequence: Recent[tuple[str, int], int] = Recent(max_agents, "source.sflow.agents_expired")
        self.lost: Recent[str, int] = Recent(max_agents, "source.sflow.agents_expired")
        self.agent_counters = PerExporter("source.sflow.agent", max_agents)
        self._batch = _Batch()

    def feed(self, data: bytes | memoryview, time: float) -> bool:
        """Parse one datagram received at ``time`` (UNIX s); False when it was skipped (counted)."""
        health.count("source.sflow.datagrams")
        one = _Batch()
        try:
            agent, sub_agent, sequence = self._datagram(memoryview(data), time, one)
        except Invalid as exc:
            health.count(f"decode.skip.{exc.reason}")
            return False
        except (struct.error, ValueError, IndexError):
            health.count("decode.skip.malformed")
            return False
        self._sequence(agent, sub_agent, sequence)
        self._batch.extend(one)
        return True

    def flush(self) -> Decoded:
        b, self._batch = self._batch, _Batch()
        frames = None
        header_flows = np.zeros(0, FLOW_DTYPE)
        if b.frames:
            frames = frames_from([(b.frames, np.array(b.wirelen), np.array(b.time), np.array(b.weight))], np.array(b.linktype))
            rows = np.array(b.header_meta, dtype=FLOW_DTYPE)
            header_flows = rows[fill_from_frames(rows, frames)]
        return Decoded(np.array(b.flows, dtype=FLOW_DTYPE), header_flows, frames)

    def _datagram(self, data: memoryview, time: float, out: _Batch) -> tuple[str, int, int]:
        """Parse one datagram into ``out``; returns (agent, sub-agent, sequence) or raises Invalid."""
        if len(data) < 28:
            raise Invalid("truncated")
        if _U32.unpack_from(data)[0] != 5:
            raise Invalid("sflow_version")
        size = {1: 4, 2: 16}.get(_U32.unpack_from(data, 4)[0])
        if size is None:
            raise Invalid("sflow_address")
        agent_text = str(ipaddress.ip_address(bytes(data[8 : 8 + size])))
        pos = 8 + size
        if len(data) < pos + 16:
            raise Invalid("truncated")
        sub_agent, sequence, _uptime, count = struct.unpack_from("!IIII", data, pos)
        agent = addr_halves(agent_text)
        for fmt, body in _items(data, pos + 16, len(data), count, exact=False):
            if fmt >> 12:
                health.count("decode.skip.sflow_enterprise_sample")
            elif fmt & 0xFFF in (1, 3):
                self._flow_sample(body, fmt & 0xFFF == 3, time, agent, agent_text, out)
            elif fmt & 0xFFF in (2, 4):
                health.count("source.sflow.counter_samples")
            else:
                health.count("decode.skip.sflow_sample")
        return agent_text, sub_agent, sequence

    def _sequence(self, agent: str, sub_agent: int, sequence: int) -> None:
        key = (agent, sub_agent)
        expected = self.next_sequence.get(key)
        if expected is not None:
            gap = (sequence - expected) & 0xFFFF_FFFF
            if 0 < gap < 2**31:
                self.lost.put(agent, (self.lost.get(agent) or 0) + gap)
                health.count("source.sflow.lost.datagrams", gap)
                self.agent_counters.count(agent, "lost.datagrams", gap)
        self.next_sequence.put(key, (sequence + 1) & 0xFFFF_FFFF)

    def _flow_sample(self, body: memoryview, expanded: bool, time: float, agent: tuple[int, int], agent_text: str,
                     out: _Batch) -> None:
        head = _EXPANDED if expanded else _FLOW
        if len(body) < head.size:
            raise Invalid("sflow_length")
        values = head.unpack_from(body)
        rate = float(values[3] if expanded else values[2]) or 1.0
        rate = self.override.get(agent_text, rate)
        vlan = 0
        headers: list[tuple[int, bytes, int]] = []
        sampled: list[tuple] = []
        health.count("source.sflow.flow_samples")
        for fmt, record in _items(body, head.size, len(body), values[-1]):
            if fmt == 1:
                protocol, frame_length, stripped, header_length = _RAW.unpack_from(record)
                if _RAW.size + header_length > len(record):
                    raise Invalid("sflow_length")
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
        for protocol, header, wirelen in headers:
            linktype = LINKTYPES.get(protocol)
            if linktype is None:
                health.count("decode.skip.sflow_header_protocol")
                continue
            out.frames.append(header)
            out.wirelen.append(wirelen)
            out.time.append(time)
            out.weight.append(rate)
            out.linktype.append(linktype)
            out.header_meta.append((time, time, agent[0], agent[1], 0, 0, 0, 0, 0, 0, 0, vlan, 1.0, 0.0, rate, SFLOW_VERSION))
        if not headers:
            for ip_len, proto, src, dst, sport, dport in sampled:
                out.flows.append(_row(time, agent, str(src), str(dst), sport, dport, proto, vlan, ip_len, rate))


class SflowSource(FlowSource):
    """sFlow v5 agents."""

    name = "sflow"

    def __init__(self, config: Config, listen: bool = True) -> None:
        super().__init__(config, listen)
        self.decoder = SflowDecoder(config.sampling)

    def decode(self, batch: list[Datagram]) -> tuple[Observations, Frames | None, float]:
        for datagram in batch:
            self.decoder.feed(datagram.payload, datagram.time)
        decoded = self.decoder.flush()
        return Observations(ntp_observations(decoded.flows)), decoded.frames, max(d.time for d in batch)


__all__ = ["Config", "SflowSource", "build", "check"]


def build(config: Config, settings: Settings) -> SflowSource:
    return SflowSource(config)
