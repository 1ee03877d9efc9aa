"""UDP export listeners (IPv4 and IPv6) with an exporter allowlist, shared by NetFlow and sFlow.

Datagrams are decoded in batches: up to ``max_datagrams`` or ``batch_seconds``,
whichever comes first, so decoding runs once per batch. A pcap of export
traffic can stand in for the sockets (replay), read through the pcap reader.
"""

from __future__ import annotations

import fcntl
import ipaddress
import multiprocessing
import os
import select
import selectors
import signal
import socket
import struct
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

RECV_BUFFER = 32 << 20
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
    """Bound UDP sockets drained by a receiver process; ``receive`` yields batches until ``close``.

    A child process (forked, stopped by PID on ``close``) reads the sockets and sends
    the datagrams in chunks over a pipe: a thread here would have to win the GIL
    back from the decoder for every datagram, and a burst would overflow the
    kernel's buffer meanwhile. A reader thread takes each chunk in one go, so a
    burst waits in memory, not in a kernel buffer that overflows while a batch is decoded. Its queue is bounded in bytes (``max_queued_bytes``, payload
    bytes): past it datagrams are dropped and counted (``source.<name>.dropped``).
    While more than one exporter has datagrams waiting, none may hold more than half
    the queue, so one flooding exporter cannot crowd out the others.
    """

    def __init__(self, endpoints: list[str], allowlist: Allowlist, name: str, max_queued_bytes: int = 64 << 20) -> None:
        self.allowlist = allowlist
        self.name = name
        self.max_queued_bytes = max_queued_bytes
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._queue: deque[Datagram] = deque()
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self._by_exporter: dict[str, int] = {}
        self._arrived = threading.Event()
        self._pump: multiprocessing.process.BaseProcess | None = None
        self._read_fd: int | None = None
        self._write_fd: int | None = None
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
            log.info("listening for exports", source=name, address=host, port=sock.getsockname()[1])
        self._read_fd, self._write_fd = os.pipe()
        self._pump = multiprocessing.get_context("fork").Process(
            target=_pump, args=(self.sockets, self._write_fd, os.getpid(), max_queued_bytes),
            name=f"netmon-{name}-receiver", daemon=True)
        self._pump.start()
        os.close(self._write_fd)  # the child holds the write end: its exit is EOF here
        self._write_fd = None
        self._reader.start()

    @property
    def queued_bytes(self) -> int:
        """Payload bytes waiting to be decoded."""
        return self._queued_bytes

    def _admit(self, datagram: Datagram) -> bool:
        """Queue a datagram unless the byte bound (or the exporter's fair half of it) is reached."""
        size = len(datagram.payload)
        with self._lock:
            mine = self._by_exporter.get(datagram.source, 0)
            crowded = len(self._by_exporter) > (1 if mine else 0) and mine + size > self.max_queued_bytes // 2
            if self._queued_bytes + size > self.max_queued_bytes or crowded:
                return False
            self._queue.append(datagram)
            self._queued_bytes += size
            self._by_exporter[datagram.source] = mine + size
        return True

    def _take(self, limit: int) -> list[Datagram]:
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), limit))]
            for d in batch:
                left = self._by_exporter[d.source] - len(d.payload)
                if left:
                    self._by_exporter[d.source] = left
                else:
                    del self._by_exporter[d.source]
                self._queued_bytes -= len(d.payload)
        return batch

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
            yield self._take(max_datagrams)

    def _read(self) -> None:
        """Take the receiver's frames off its pipe and queue their allowed datagrams.

        One ``os.read`` brings up to a MB of datagrams, so this thread wins the GIL
        back once per read, not once per datagram.
        """
        allows, admit, fd = self.allowlist.allows, self._admit, self._read_fd
        pending = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(fd, _PIPE_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                if not self._stop.is_set():
                    log.error("export receiver process stopped", source=self.name, exitcode=self._pump.exitcode if self._pump else None)
                    health.count(f"source.{self.name}.failed")
                return
            pending += data
            frames, used = _frames(pending)
            del pending[:used]
            for dropped, chunk in frames:
                if dropped:
                    health.count(f"source.{self.name}.dropped", dropped)
                for payload, address, port, arrival in _unpack(chunk):
                    if not allows(address):
                        health.count(f"source.{self.name}.denied")
                    elif not admit(Datagram(payload, address, port, 0, arrival)):
                        health.count(f"source.{self.name}.dropped")
            if frames:
                self._arrived.set()

    def close(self) -> None:
        self._stop.set()
        self._arrived.set()
        if self._pump is not None and self._pump.is_alive():
            self._pump.terminate()
            self._pump.join(timeout=5)
        if self._reader.is_alive():
            self._reader.join(timeout=2)
        for sock in self.sockets:
            sock.close()
        for fd in (self._read_fd, self._write_fd):
            if fd is not None:
                os.close(fd)
        self._read_fd = self._write_fd = None


#: Per datagram in a pump chunk: payload length, sender port, arrival (UNIX s), address length.
_ENTRY = struct.Struct("!IHdB")
#: Per chunk on the pipe: its length and the datagrams the receiver dropped before it.
_FRAME = struct.Struct("!II")
#: Bytes a chunk holds before it is framed; a chunk also goes after ``_PUMP_FLUSH`` s of quiet.
_PUMP_CHUNK = 1 << 18
_PUMP_FLUSH = 0.005
#: Pipe capacity asked for (F_SETPIPE_SZ) and the reader's read size.
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031


def _pack(buffer: bytearray, payload: bytes, address: str, port: int, arrival: float) -> None:
    name = address.encode()
    buffer += _ENTRY.pack(len(payload), port, arrival, len(name))
    buffer += name
    buffer += payload


def _unpack(chunk: bytes | memoryview) -> Iterator[tuple[bytes, str, int, float]]:
    """(payload, address, port, arrival) of each datagram in a pump chunk."""
    view, pos = memoryview(chunk), 0
    while pos < len(view):
        size, port, arrival, name_len = _ENTRY.unpack_from(view, pos)
        pos += _ENTRY.size
        address = bytes(view[pos : pos + name_len]).decode()
        pos += name_len
        yield bytes(view[pos : pos + size]), address, port, arrival
        pos += size


def _frames(data: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete (dropped count, chunk) frames at the start of ``data`` and the bytes they used."""
    out, pos = [], 0
    while pos + _FRAME.size <= len(data):
        size, dropped = _FRAME.unpack_from(data, pos)
        if pos + _FRAME.size + size > len(data):
            break
        out.append((dropped, bytes(data[pos + _FRAME.size : pos + _FRAME.size + size])))
        pos += _FRAME.size + size
    return out, pos


def _pump(sockets: list[socket.socket], fd: int, parent: int, max_bytes: int) -> None:
    """The receiver process: drain the sockets into memory, write them to the collector's pipe as it reads.

    Alone in its process it never waits for the decoder's GIL, and it never blocks
    on the pipe (non-blocking writes), so the sockets are drained at the pace
    datagrams arrive. What waits for the pipe is bounded by ``max_bytes``; past it
    datagrams are dropped and the count travels with the next frame. It exits when
    the collector goes away or closes the pipe.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and reloads are the collector's to handle;
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # it stops this process (SIGTERM) when it closes
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.set_blocking(fd, False)
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    chunk, out = bytearray(), bytearray()
    dropped = 0
    while os.getppid() == parent:
        ready = selector.select(_PUMP_FLUSH if (chunk or out) else 0.2)
        arrival = time.time()
        for key, _ in ready:
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            while len(chunk) < _PUMP_CHUNK:
                try:
                    payload, peer = sock.recvfrom(MAX_DATAGRAM)
                except OSError:  # nothing left (EAGAIN), or an error queued on the socket: read on next time
                    break
                if len(out) + len(chunk) + len(payload) > max_bytes:
                    dropped += 1
                    continue
                address = peer[0]
                if address.startswith("::ffff:") and "." in address:
                    address = address[7:]
                _pack(chunk, payload, address, peer[1], arrival)
        if (chunk or dropped) and (len(chunk) >= _PUMP_CHUNK or not ready):
            out += _FRAME.pack(len(chunk), dropped)
            out += chunk
            chunk.clear()
            dropped = 0
        if out:
            try:
                del out[: os.write(fd, out)]
            except BlockingIOError:
                pass
            except OSError:
                return


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
