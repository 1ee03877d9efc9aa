"""UDP export listeners (IPv4 and IPv6) with an exporter allowlist, shared by NetFlow and sFlow.

Datagrams are read in batches: up to ``max_datagrams`` or ``batch_seconds``,
whichever comes first, so decoding runs once per batch. A pcap of export
traffic can stand in for the sockets (replay), read through the pcap reader.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

from netmon import health
from netmon.sources.netflow.datagrams import Datagram, udp_datagrams
from netmon.sources.pcapfile import read_frames

log = structlog.get_logger(__name__)

RECV_BUFFER = 8 << 20
MAX_DATAGRAM = 65535


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port); raises ValueError with the expected form."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{text!r} is not host:port such as 0.0.0.0:2055 or [::]:2055")
    host = host.strip("[]")
    ipaddress.ip_address(host)
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port out of range")
    return host, int(port)


class Allowlist:
    """Exporter addresses allowed to send; an empty list allows any (counted per denial)."""

    def __init__(self, prefixes: list[str]) -> None:
        self.networks = [ipaddress.ip_network(p, strict=False) for p in prefixes]
        self._seen: dict[str, bool] = {}

    def allows(self, address: str) -> bool:
        known = self._seen.get(address)
        if known is None:
            ip = ipaddress.ip_address(address)
            if ip.version == 6 and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            known = not self.networks or any(ip in net for net in self.networks)
            if len(self._seen) < 65536:
                self._seen[address] = known
        return known


class Listener:
    """Bound UDP sockets; ``receive`` yields batches of datagrams until ``close``."""

    def __init__(self, endpoints: list[str], allowlist: Allowlist, name: str) -> None:
        self.allowlist = allowlist
        self.name = name
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        for text in endpoints:
            host, port = parse_endpoint(text)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind((host, port))
            sock.setblocking(False)
            self.sockets.append(sock)
            self._selector.register(sock, selectors.EVENT_READ)
            log.info("listening for exports", source=name, address=host, port=sock.getsockname()[1])

    @property
    def ports(self) -> list[int]:
        return [s.getsockname()[1] for s in self.sockets]

    def receive(self, batch_seconds: float, max_datagrams: int = 4096) -> Iterator[list[Datagram]]:
        """Batches of allowed datagrams; an empty batch after ``batch_seconds`` of silence."""
        while not self._stop.is_set():
            batch: list[Datagram] = []
            deadline = time.monotonic() + batch_seconds
            while len(batch) < max_datagrams and not self._stop.is_set():
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                ready = self._selector.select(min(wait, 0.1))
                for key, _ in ready:
                    self._drain(key.fileobj, batch, max_datagrams)  # type: ignore[arg-type]
            yield batch

    def _drain(self, sock: socket.socket, batch: list[Datagram], limit: int) -> None:
        now = time.time()
        while len(batch) < limit:
            try:
                payload, peer = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if self._stop.is_set():
                    return
                raise
            address = peer[0]
            if address.startswith("::ffff:") and "." in address:
                address = address[7:]
            if not self.allowlist.allows(address):
                health.count(f"source.{self.name}.denied")
                continue
            batch.append(Datagram(payload, address, peer[1], 0, now))

    def close(self) -> None:
        self._stop.set()
        for sock in self.sockets:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()


def replay(paths: list[str], allowlist: Allowlist, name: str) -> Iterator[list[Datagram]]:
    """Datagrams of pcap files of export traffic, one batch per chunk of frames."""
    for path in paths:
        for frames in read_frames(Path(path)):
            found = list(udp_datagrams(frames))
            batch = [d for d in found if allowlist.allows(d.source)]
            if len(batch) < len(found):
                health.count(f"source.{name}.denied", len(found) - len(batch))
            yield batch
