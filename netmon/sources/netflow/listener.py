"""UDP export listeners (IPv4 and IPv6) with an exporter allowlist, shared by NetFlow and sFlow.

Datagrams are decoded in batches: up to ``max_datagrams`` or ``batch_seconds``,
whichever comes first, so decoding runs once per batch. A pcap of export
traffic can stand in for the sockets (replay), read through the pcap reader.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import threading
import time
from collections import deque
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


class ListenError(OSError):
    """A configured listen address cannot be bound (in use, not local, no permission)."""


def listen_problems(endpoints: list[str], name: str) -> list[str]:
    """Why each endpoint cannot be bound now (busy port, address not local), for ``check-config``."""
    problems = []
    for text in endpoints:
        host, port = parse_endpoint(text)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                problems.append(f"{name} source cannot listen on {text}: {exc.strerror or exc}")
    return problems


class Listener:
    """Bound UDP sockets drained by a reader thread; ``receive`` yields batches until ``close``.

    The reader thread only copies datagrams off the sockets (the system calls release
    the GIL), so a burst waits in memory, not in a kernel buffer that overflows while
    a batch is decoded. Its queue is bounded; past ``max_queued`` datagrams are dropped
    and counted (``source.<name>.dropped``).
    """

    def __init__(self, endpoints: list[str], allowlist: Allowlist, name: str, max_queued: int = 50_000) -> None:
        self.allowlist = allowlist
        self.name = name
        self.max_queued = max_queued
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._queue: deque[Datagram] = deque()
        self._arrived = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        for text in endpoints:
            host, port = parse_endpoint(text)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _receive_buffer(sock)
            try:
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                self.close()
                raise ListenError(f"{name} source cannot listen on {text}: {exc.strerror or exc}") from None
            sock.setblocking(False)
            self.sockets.append(sock)
            self._selector.register(sock, selectors.EVENT_READ)
            log.info("listening for exports", source=name, address=host, port=sock.getsockname()[1])
        self._reader.start()

    @property
    def ports(self) -> list[int]:
        return [s.getsockname()[1] for s in self.sockets]

    def receive(self, batch_seconds: float, max_datagrams: int = 8192) -> Iterator[list[Datagram]]:
        """Batches of allowed datagrams; an empty batch after ``batch_seconds`` of silence."""
        queue = self._queue
        while not self._stop.is_set():
            if len(queue) < max_datagrams:
                self._arrived.wait(batch_seconds)
            self._arrived.clear()
            batch = [queue.popleft() for _ in range(min(len(queue), max_datagrams))]
            yield batch

    def _read(self) -> None:
        queue, allows, limit = self._queue, self.allowlist.allows, self.max_queued
        while not self._stop.is_set():
            try:
                ready = self._selector.select(0.2)
            except (OSError, ValueError):
                if not self._stop.is_set():
                    log.exception("export listener stopped", source=self.name)
                    health.count(f"source.{self.name}.failed")
                return
            now = time.time()
            for key, _ in ready:
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                while True:
                    try:
                        payload, peer = sock.recvfrom(MAX_DATAGRAM)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        if not self._stop.is_set():
                            log.exception("export socket failed", source=self.name)
                            health.count(f"source.{self.name}.failed")
                        return
                    address = peer[0]
                    if address.startswith("::ffff:") and "." in address:
                        address = address[7:]
                    if not allows(address):
                        health.count(f"source.{self.name}.denied")
                    elif len(queue) >= limit:
                        health.count(f"source.{self.name}.dropped")
                    else:
                        queue.append(Datagram(payload, address, peer[1], 0, now))
            if ready:
                self._arrived.set()

    def close(self) -> None:
        self._stop.set()
        self._arrived.set()
        if self._reader.is_alive():
            self._reader.join(timeout=2)
        for sock in self.sockets:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()


def _receive_buffer(sock: socket.socket) -> None:
    """A large kernel receive buffer: forced past rmem_max when allowed (root), else as large as permitted."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, RECV_BUFFER)
            return
        except OSError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)


def replay(paths: list[str], allowlist: Allowlist, name: str) -> Iterator[list[Datagram]]:
    """Datagrams of pcap files of export traffic, one batch per chunk of frames."""
    for path in paths:
        for frames in read_frames(Path(path)):
            found = list(udp_datagrams(frames))
            batch = [d for d in found if allowlist.allows(d.source)]
            if len(batch) < len(found):
                health.count(f"source.{name}.denied", len(found) - len(batch))
            yield batch
