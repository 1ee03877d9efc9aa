"""Flow exports inside a capture, routed through the flow path (``netmon replay``).

Operators often hold a tcpdump of an exporter's stream and want to test detection
on it before pointing routers at netmon. A capture's UDP datagrams sent to a
NetFlow/IPFIX port or an sFlow port are handed to the very decoders the live
``netflow`` and ``sflow`` sources use (same strict validation, same per-exporter
state, the capture time standing in for the arrival time), so a replay of the
stream gives the same observations, per host, as the listener that received it.
Datagrams on those ports that are not well-formed exports are counted skips.
"""

from __future__ import annotations

from collections.abc import Iterator

from netmon.batch import Frames, Observations
from netmon.sources.netflow.datagrams import udp_datagrams
from netmon.sources.netflow.source import Config as NetflowConfig
from netmon.sources.netflow.source import FlowSource, NetflowSource
from netmon.sources.sflow import Config as SflowConfig
from netmon.sources.sflow import SflowSource

#: Collector ports exporters send to by default: NetFlow (2055, 9995, 9996) and IPFIX (4739).
NETFLOW_PORTS = (2055, 4739, 9995, 9996)
#: sFlow's registered port.
SFLOW_PORTS = (6343,)


class ExportRouter:
    """Finds export datagrams in captured frames and decodes them as the live sources do."""

    def __init__(self, netflow_ports: list[int], sflow_ports: list[int]) -> None:
        self.routes: list[tuple[tuple[int, ...], FlowSource]] = []
        if netflow_ports:
            self.routes.append((tuple(netflow_ports), NetflowSource(NetflowConfig(), listen=False)))
        if sflow_ports:
            self.routes.append((tuple(sflow_ports), SflowSource(SflowConfig(), listen=False)))
        self._ports = tuple(port for ports, _ in self.routes for port in ports)

    @property
    def lateness(self) -> float:
        """Seconds flow records may trail the capture's newest time (the flow sources' own lateness)."""
        return max((source.lateness for _, source in self.routes), default=0.0)

    def route(self, frames: Frames) -> Iterator[Observations | Frames]:
        """Observations (UDP/123 flow records) and Frames (sampled headers) of the exports in ``frames``."""
        if not self.routes:
            return
        found = list(udp_datagrams(frames, self._ports))
        if not found:
            return
        for ports, source in self.routes:
            batch = [d for d in found if d.dport in ports]
            if not batch:
                continue
            observations, sampled, _ = source.decode(batch)
            if len(observations):
                yield observations
            if sampled is not None and len(sampled):
                yield sampled
