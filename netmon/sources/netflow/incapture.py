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

from typing import Any

from netmon.batch import Frames, Observations
from netmon.sources.netflow.datagrams import udp_datagrams

#: Collector ports exporters send to by default: NetFlow (2055, 9995, 9996) and IPFIX (4739).
NETFLOW_PORTS = (2055, 4739, 9995, 9996)
#: sFlow's registered port.
SFLOW_PORTS = (6343,)
#: Default ``record_delay`` (s) of the netflow and sflow sources: how far their records may trail.
NETFLOW_RECORD_DELAY = 60.0
SFLOW_RECORD_DELAY = 1.0


class ExportRouter:
    """Finds export datagrams in captured frames and decodes them as the live sources do.

    The decoders are built when the first export datagram turns up, so a capture of
    plain packets never imports the collector.
    """

    def __init__(self, netflow_ports: list[int], sflow_ports: list[int]) -> None:
        self.netflow_ports = tuple(netflow_ports)
        self.sflow_ports = tuple(sflow_ports)
        self._ports = self.netflow_ports + self.sflow_ports
        self._routes: list[tuple[tuple[int, ...], Any]] | None = None

    @property
    def lateness(self) -> float:
        """Seconds flow records may trail the capture's newest time (the flow sources' own lateness)."""
        return max([NETFLOW_RECORD_DELAY] * bool(self.netflow_ports) + [SFLOW_RECORD_DELAY] * bool(self.sflow_ports), default=0.0)

    def _decoders(self) -> list[tuple[tuple[int, ...], Any]]:
        if self._routes is None:
            from netmon.sources.netflow.source import Config as NetflowConfig
            from netmon.sources.netflow.source import NetflowSource
            from netmon.sources.sflow import Config as SflowConfig
            from netmon.sources.sflow import SflowSource

            self._routes = []
            if self.netflow_ports:
                self._routes.append((self.netflow_ports, NetflowSource(NetflowConfig(), listen=False)))
            if self.sflow_ports:
                self._routes.append((self.sflow_ports, SflowSource(SflowConfig(), listen=False)))
        return self._routes

    def route(self, frames: Frames) -> Iterator[Observations | Frames]:
        """Observations (UDP/123 flow records) and Frames (sampled headers) of the exports in ``frames``."""
        if not self._ports:
            return
        found = list(udp_datagrams(frames, self._ports, share=True))  # the NTP decoder reads the batch next
        if not found:
            return
        for ports, source in self._decoders():
            batch = [d for d in found if d.dport in ports]
            if not batch:
                continue
            observations, sampled, _ = source.decode(batch)
            if len(observations):
                yield observations
            if sampled is not None and len(sampled):
                yield sampled
