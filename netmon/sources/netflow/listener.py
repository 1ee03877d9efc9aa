"""UDP export listeners (IPv4 and IPv6) with an exporter allowlist, shared by NetFlow and sFlow.

Datagrams are decoded in batches: up to ``max_datagrams`` or ``batch_seconds``,
whichever comes first, so decoding runs once per batch. A pcap of export
traffic can stand in for the sockets (replay), read through the pcap reader.
"""

from __future__ import annotations

import fcntl
import functools
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
from itertools import repeat
from pathlib import Path

import numpy as np
import structlog

from netmon import health
from netmon.batch import addr_text
from netmon.sources.netflow.datagrams import Datagram, udp_datagrams
from netmon.sources.netflow.mmsg import BatchReceiver, kernel_drops
from netmon.sources.pcapfile import read_frames

log = structlog.get_logger(__name__)

RECV_BUFFER = 32 << 20


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

    A child process (forked, stopped by PID on ``close``) reads the sockets up to
    256 datagrams per system call (:mod:`~netmon.sources.netflow.mmsg`) and sends
    them in chunks over a pipe: alone in its process it never waits for the
    decoder's GIL, so a burst waits in memory, not in a kernel buffer that
    overflows while a batch is decoded. A reader thread takes each chunk in one go
    (one lock, one allowlist look-up per sender). Its queue is bounded in bytes
    (``max_queued_bytes``, payload bytes): past it datagrams are dropped and counted
    (``source.<name>.dropped``).
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
        self._senders: dict[bytes, str] = {}
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
            buffer = _receive_buffer(sock, name)
            try:
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                self.close()
                raise ListenError(f"{name} source cannot listen on {text}: {exc.strerror or exc}") from None
            sock.setblocking(False)
            self.sockets.append(sock)
            log.info("listening for exports", source=name, address=host, port=sock.getsockname()[1], receive_buffer_bytes=buffer)
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

    def _admit(self, datagrams: list[Datagram], totals: dict[str, int]) -> int:
        """Queue datagrams unless the byte bound (or an exporter's fair half of it) is reached; returns how many were refused.

        ``totals``: payload bytes of ``datagrams`` per exporter. When all of them fit, within the bound
        and each exporter within half of it, they are queued at once: one at a time none would be refused.
        When some are refused the others are queued as copies: a view would keep the refused ones'
        bytes alive, memory the byte bound does not count.
        """
        admitted: list[Datagram] = []
        with self._lock:
            by_exporter, queue, half = self._by_exporter, self._queue, self.max_queued_bytes // 2
            if self._queued_bytes + sum(totals.values()) <= self.max_queued_bytes and all(
                    by_exporter.get(source, 0) + size <= half for source, size in totals.items()):
                queue.extend(datagrams)
                self._queued_bytes += sum(totals.values())
                for source, size in totals.items():
                    by_exporter[source] = by_exporter.get(source, 0) + size
                return 0
            for datagram in datagrams:
                size = len(datagram.payload)
                mine = by_exporter.get(datagram.source, 0)
                crowded = len(by_exporter) > (1 if mine else 0) and mine + size > half
                if self._queued_bytes + size > self.max_queued_bytes or crowded:
                    continue
                admitted.append(datagram)
                self._queued_bytes += size
                by_exporter[datagram.source] = mine + size
            refused = len(datagrams) - len(admitted)
            queue.extend([d._replace(payload=bytes(d.payload)) for d in admitted] if refused else admitted)
        return refused

    def _take(self, limit: int) -> list[Datagram]:
        taken: dict[str, int] = {}
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), limit))]
            for d in batch:
                taken[d.source] = taken.get(d.source, 0) + len(d.payload)
            for source, size in taken.items():
                left = self._by_exporter[source] - size
                if left:
                    self._by_exporter[source] = left
                else:
                    del self._by_exporter[source]
            self._queued_bytes -= sum(taken.values())
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
        fd = self._read_fd
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
            for dropped, kernel, table, payloads in frames:
                if dropped:
                    health.count(f"source.{self.name}.dropped", dropped)
                if kernel:
                    health.count(f"source.{self.name}.kernel_drops", kernel)
                self._queue_frame(table, payloads)
            if frames:
                self._arrived.set()

    def _queue_frame(self, table: np.ndarray, payloads: bytes) -> None:
        """Queue the allowed datagrams of one frame (``_ENTRY`` rows, payloads back to back); count the rest."""
        ends = np.cumsum(table["size"], dtype=np.int64)
        unique, which = np.unique(table["address"], return_inverse=True)
        senders = [self._sender_text(bytes(address)) for address in unique]
        allowed = np.array([self.allowlist.allows(text) for text in senders], dtype=bool)[which.ravel()]
        if not allowed.all():
            health.count(f"source.{self.name}.denied", int(np.count_nonzero(~allowed)))
        keep = np.flatnonzero(allowed)
        ends, sizes = ends[keep].tolist(), table["size"][keep].tolist()
        # payloads are views into the frame (no copy, no allocation per datagram) unless some are denied:
        # a view would keep the denied datagrams' bytes alive in the queue, uncounted
        view = memoryview(payloads) if len(keep) == len(table) else payloads
        bodies = [view[end - size : end] for end, size in zip(ends, sizes)]
        sources = [senders[k] for k in which.ravel()[keep].tolist()]
        datagrams = list(map(_new_datagram, zip(bodies, sources, table["port"][keep].tolist(), repeat(0),
                                                table["arrival"][keep].tolist())))
        per_sender = np.bincount(which.ravel()[keep], weights=table["size"][keep], minlength=len(senders))
        refused = self._admit(datagrams, {senders[k]: int(size) for k, size in enumerate(per_sender.tolist()) if size})
        if refused:
            health.count(f"source.{self.name}.dropped", refused)

    def _sender_text(self, address: bytes) -> str:
        """An exporter's 16-byte address as text: dotted quad for IPv4(-mapped), else IPv6 (bounded cache)."""
        text = self._senders.get(address)
        if text is None:
            text = addr_text(int.from_bytes(address[:8], "big"), int.from_bytes(address[8:], "big"))
            if len(self._senders) < 65536:
                self._senders[address] = text
        return text

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


#: Datagram from a (payload, source, sport, dport, time) tuple without a Python-level call per datagram.
_new_datagram = functools.partial(tuple.__new__, Datagram)
#: Per datagram in a pump frame: payload length, sender port, address (16 bytes, IPv4 as ::ffff:a.b.c.d),
#: arrival (UNIX s).
_ENTRY = np.dtype([("size", "<u4"), ("port", "<u2"), ("address", "V16"), ("arrival", "<f8")])
#: Per frame on the pipe: its datagrams, their payload bytes, and the datagrams dropped before it by the
#: receiver (its memory bound) and by the kernel (a full socket receive buffer).
_FRAME = struct.Struct("!IIII")
#: Payload bytes a frame holds before it is sent; a frame also goes after ``_PUMP_FLUSH`` s of quiet.
_PUMP_CHUNK = 1 << 18
_PUMP_FLUSH = 0.005
#: Pipe capacity asked for (F_SETPIPE_SZ) and the reader's read size.
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031


def _frames(data: bytearray) -> tuple[list[tuple[int, int, np.ndarray, bytes]], int]:
    """Complete (dropped, kernel dropped, ``_ENTRY`` rows, payloads) frames at the start of ``data`` and the bytes they used."""
    out, pos = [], 0
    while pos + _FRAME.size <= len(data):
        count, size, dropped, kernel = _FRAME.unpack_from(data, pos)
        table_end = pos + _FRAME.size + count * _ENTRY.itemsize
        if table_end + size > len(data):
            break
        table = np.frombuffer(bytes(data[pos + _FRAME.size : table_end]), _ENTRY)
        out.append((dropped, kernel, table, bytes(data[table_end : table_end + size])))
        pos = table_end + size
    return out, pos


def _pump(sockets: list[socket.socket], fd: int, parent: int, max_bytes: int) -> None:
    """The receiver process: drain the sockets into memory, write them to the collector's pipe as it reads.

    Alone in its process it never waits for the decoder's GIL, and it never blocks
    on the pipe (non-blocking writes), so the sockets are drained at the pace
    datagrams arrive. What waits for the pipe is bounded by ``max_bytes``; past it
    datagrams are dropped and the count travels with the next frame, as does the
    count the kernel dropped at a full socket buffer (read when a frame goes, and
    every 0.2 s while quiet). It exits when the collector goes away or closes the pipe.
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
    receivers = {}
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
        receivers[sock.fileno()] = BatchReceiver(sock)
    kernel_seen: dict[socket.socket, int | None] = {sock: 0 for sock in sockets}  # new sockets: every drop counts
    tables: list[np.ndarray] = []
    payloads: list[bytes] = []
    out = bytearray()
    size = dropped = kernel = 0
    while os.getppid() == parent:
        ready = selector.select(_PUMP_FLUSH if (tables or out or dropped) else 0.2)
        arrival = time.time()
        for key, _ in ready:
            receiver = receivers[key.fd]
            while size < _PUMP_CHUNK:
                try:
                    got = receiver.receive()
                except OSError:  # an error queued on the socket: read on next time
                    break
                if not got:
                    break
                # the datagrams that fit what may wait are kept, the rest of the call's dropped
                lengths = receiver.lengths(got)
                fit = int(np.searchsorted(np.cumsum(lengths, dtype=np.int64), max_bytes - len(out) - size, side="right"))
                dropped += got - fit
                if not fit:
                    continue
                lengths = lengths[:fit]
                table = np.empty(fit, _ENTRY)
                table["size"], table["arrival"] = lengths, arrival
                table["address"], table["port"] = receiver.senders(fit)
                tables.append(table)
                payloads.append(receiver.payloads(lengths))
                size += int(lengths.sum())
        if size >= _PUMP_CHUNK or not ready:
            for sock, seen in kernel_seen.items():
                now = kernel_drops(sock)
                if seen is not None and now is not None:
                    kernel += (now - seen) & 0xFFFF_FFFF
                kernel_seen[sock] = now
            if tables or dropped or kernel:
                table = np.concatenate(tables) if tables else np.empty(0, _ENTRY)
                out += _FRAME.pack(len(table), size, dropped, kernel)
                out += table.tobytes()
                out += b"".join(payloads)
                tables, payloads = [], []
                size = dropped = kernel = 0
        if out:
            try:
                del out[: os.write(fd, out)]
            except BlockingIOError:
                pass
            except OSError:
                return


#: Linux SO_RCVBUFFORCE (asm-generic/socket.h); Python's socket module does not export it.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _receive_buffer(sock: socket.socket, name: str) -> int:
    """Ask for a ``RECV_BUFFER``-byte kernel receive buffer; returns the size granted (bytes, comparable with
    ``net.core.rmem_max``: the kernel reports twice that, its bookkeeping overhead). With CAP_NET_ADMIN (root)
    it is forced past ``net.core.rmem_max``; otherwise it is capped there, logged as a warning: a burst longer
    than the buffer is lost in the kernel."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECV_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if granted < RECV_BUFFER:
        log.warning("receive buffer smaller than asked: raise net.core.rmem_max or grant CAP_NET_ADMIN",
                    source=name, granted_bytes=granted, asked_bytes=RECV_BUFFER)
    return granted


def replay(paths: list[str], allowlist: Allowlist, name: str) -> Iterator[list[Datagram]]:
    """Datagrams of pcap files of export traffic, one batch per chunk of frames."""
    for path in paths:
        for frames in read_frames(Path(path)):
            found = list(udp_datagrams(frames))
            batch = [d for d in found if allowlist.allows(d.source)]
            if len(batch) < len(found):
                health.count(f"source.{name}.denied", len(found) - len(batch))
            yield batch
