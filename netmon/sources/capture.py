"""AF_PACKET source for a mirror/SPAN port: a kernel-filtered TPACKET_V3 ring of UDP/123 frames.

The kernel runs a classic BPF filter (UDP port 123, untagged, one or two VLAN tags,
IPv4 and IPv6) before anything reaches user space, and fills a memory-mapped ring of
blocks; user space walks each full block once, copies the frames into one
:class:`~netmon.batch.Frames` batch and hands the block back. The kernel's own
counters (packets seen by the filter, drops because the ring was full) are reported
as ``source.capture.*`` health counters.
"""

from __future__ import annotations

import ctypes
import mmap
import select
import socket
import struct
import threading
import time
from collections.abc import Generator, Iterator
from typing import Literal

import numpy as np
import structlog
from pydantic import Field

from netmon import health
from netmon.batch import Frames, Watermark
from netmon.config import Settings, Strict
from netmon.sources import live

log = structlog.get_logger(__name__)

#: ``tcpdump -dd -y EN10MB 'udp port 123 or (vlan and udp port 123) or (vlan and udp port 123)'``
#: (tcpdump 4.99.3 / libpcap 1.10.3): in libpcap each ``vlan`` shifts the offsets of what
#: follows, so this matches no tag, one and two in-band tags (an offloaded outer tag is
#: not in the data the filter sees, so those frames match as untagged). code,jt,jf,k.
FILTER_TEXT = """
    0x28,0,0,0x0000000c 0x15,0,6,0x000086dd 0x30,0,0,0x00000014 0x15,0,35,0x00000011
    0x28,0,0,0x00000036 0x15,55,0,0x0000007b 0x28,0,0,0x00000038 0x15,53,31,0x0000007b
    0x15,0,9,0x00000800 0x30,0,0,0x00000017 0x15,0,28,0x00000011 0x28,0,0,0x00000014
    0x45,26,0,0x00001fff 0xb1,0,0,0x0000000e 0x48,0,0,0x0000000e 0x15,45,0,0x0000007b
    0x48,0,0,0x00000010 0x15,43,21,0x0000007b 0x15,2,0,0x00008100 0x15,1,0,0x000088a8
    0x15,0,18,0x00009100 0x28,0,0,0x00000010 0x15,0,6,0x000086dd 0x30,0,0,0x00000018
    0x15,0,37,0x00000011 0x28,0,0,0x0000003a 0x15,34,0,0x0000007b 0x28,0,0,0x0000003c
    0x15,32,33,0x0000007b 0x15,0,9,0x00000800 0x30,0,0,0x0000001b 0x15,0,30,0x00000011
    0x28,0,0,0x00000018 0x45,28,0,0x00001fff 0xb1,0,0,0x00000012 0x48,0,0,0x00000012
    0x15,24,0,0x0000007b 0x48,0,0,0x00000014 0x15,22,23,0x0000007b 0x28,0,0,0x00000010
    0x15,2,0,0x00008100 0x15,1,0,0x000088a8 0x15,0,19,0x00009100 0x28,0,0,0x00000014
    0x15,0,6,0x000086dd 0x30,0,0,0x0000001c 0x15,0,15,0x00000011 0x28,0,0,0x0000003e
    0x15,12,0,0x0000007b 0x28,0,0,0x00000040 0x15,10,11,0x0000007b 0x15,0,10,0x00000800
    0x30,0,0,0x0000001f 0x15,0,8,0x00000011 0x28,0,0,0x0000001c 0x45,6,0,0x00001fff
    0xb1,0,0,0x00000016 0x48,0,0,0x00000016 0x15,2,0,0x0000007b 0x48,0,0,0x00000018
    0x15,0,1,0x0000007b 0x6,0,0,0x00040000 0x6,0,0,0x00000000
"""
BPF_RET_K = 0x06

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
PACKET_MR_PROMISC = 1
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
LINKTYPE_ETHERNET = 1

# struct tpacket_block_desc + tpacket_hdr_v1: version, offset_to_priv, block_status,
# num_pkts, offset_to_first_pkt
BLOCK_HEADER = struct.Struct("=IIIII")
# struct tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status,
# tp_mac, tp_net, then hv1: tp_rxhash, tp_vlan_tci, tp_vlan_tpid
PACKET_HEADER = struct.Struct("=IIIIIIHHIIH")


def filter_program(snaplen: int) -> list[tuple[int, int, int, int]]:
    """The classic BPF program, its accepting return value set to ``snaplen`` bytes."""
    program = []
    for item in FILTER_TEXT.split():
        code, jt, jf, k = (int(x, 0) for x in item.split(","))
        if code == BPF_RET_K and k:
            k = snaplen
        program.append((code, jt, jf, k))
    return program


class Config(Strict):
    """``[[sources]] type = "capture"``: AF_PACKET on a mirror/SPAN port (or any interface)."""

    type: Literal["capture"]
    interface: str = Field(description="interface to read, e.g. the mirror port")
    netns: str = Field("", description="network namespace of the interface (ip netns name); empty = this one")
    promiscuous: bool = Field(False, description="put the interface in promiscuous mode (needed on most SPAN ports)")
    snaplen: int = Field(1024, ge=128, le=65535, description="bytes kept per frame (mode 6/7 replies can be long)")
    ring_mb: int = Field(64, ge=1, le=4096, description="ring size, MiB: absorbs bursts while Python is busy")
    block_kb: int = Field(1024, ge=4, description="ring block size, KiB (a power of two times the page size)")
    block_timeout_ms: int = Field(100, ge=1, le=10000, description="a partly filled block is handed over after this")
    watermark_interval: float = Field(1.0, gt=0, description="seconds between watermarks on a quiet link")


def build(config: Config, settings: Settings) -> "CaptureSource":
    return CaptureSource(config)


def check(config: Config) -> list[str]:
    """What would stop the source from starting here (for ``netmon check-config``)."""
    try:
        live.require_caps("the capture source", {"CAP_NET_RAW": live.CAP_NET_RAW})
        with live.netns(config.netns):
            live.interface_index(config.interface)
    except live.LiveError as exc:
        return [str(exc)]
    return []


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER: Python has no helper, so the sock_fprog is built with ctypes."""
    insns = (_SockFilter * len(program))(*[_SockFilter(*p) for p in program])
    fprog = _SockFprog(len(program), insns)
    libc = ctypes.CDLL(None, use_errno=True)
    ret = libc.setsockopt(sock.fileno(), socket.SOL_SOCKET, SO_ATTACH_FILTER, ctypes.byref(fprog),
                          ctypes.sizeof(fprog))
    if ret != 0:
        raise OSError(ctypes.get_errno(), "SO_ATTACH_FILTER failed")


class Ring:
    """A TPACKET_V3 receive ring on one interface, filtered in the kernel."""

    def __init__(self, config: Config) -> None:
        live.require_caps("the capture source", {"CAP_NET_RAW": live.CAP_NET_RAW})
        page = mmap.PAGESIZE
        self.block_size = max(page, (config.block_kb * 1024 // page) * page)
        if self.block_size & (self.block_size - 1):
            raise live.LiveError(f"block_kb = {config.block_kb}: the block size must be a power of two KiB")
        self.block_nr = max(2, config.ring_mb * 1024 * 1024 // self.block_size)
        with live.netns(config.netns):
            self.ifindex = live.interface_index(config.interface)
            # protocol 0: nothing is queued before the filter and the ring are in place
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            attach_filter(self.sock, filter_program(config.snaplen))
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame_size = 2048
            req = struct.pack(
                "=IIIIIII", self.block_size, self.block_nr, frame_size,
                self.block_size // frame_size * self.block_nr, config.block_timeout_ms, 0, 0,
            )
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.map = mmap.mmap(self.sock.fileno(), self.block_size * self.block_nr, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            self.sock.bind((config.interface, ETH_P_ALL))
            live.require_ethernet(config.interface, self.sock.getsockname()[3])
            if config.promiscuous:
                mreq = struct.pack("=iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
                self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except Exception:
            self.sock.close()
            raise
        self.view = memoryview(self.map)
        self.block = 0
        self.poller = select.poll()
        self.poller.register(self.sock.fileno(), select.POLLIN | select.POLLERR)
        log.info("capture started", interface=config.interface, netns=config.netns or None,
                 ring_mb=self.block_size * self.block_nr >> 20, promiscuous=config.promiscuous)

    def statistics(self) -> tuple[int, int, int]:
        """(packets, drops, freeze count) since the last call (PACKET_STATISTICS resets them)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        return struct.unpack("=III", raw)

    def read(self, timeout_ms: int) -> tuple[list[bytes], list[float], list[int]]:
        """Frames of every block the kernel has handed over: (frames, times, wire lengths)."""
        frames: list[bytes] = []
        times: list[float] = []
        wirelens: list[int] = []
        if not self._ready():
            self.poller.poll(timeout_ms)
        while self._ready():
            self._walk(self.block * self.block_size, frames, times, wirelens)
            struct.pack_into("=I", self.map, self.block * self.block_size + 8, TP_STATUS_KERNEL)
            self.block = (self.block + 1) % self.block_nr
        return frames, times, wirelens

    def _ready(self) -> bool:
        status = struct.unpack_from("=I", self.map, self.block * self.block_size + 8)[0]
        return bool(status & TP_STATUS_USER)

    def _walk(self, base: int, frames: list[bytes], times: list[float], wirelens: list[int]) -> None:
        _, _, _, count, offset = BLOCK_HEADER.unpack_from(self.map, base)
        view = self.view
        at = base + offset
        for _ in range(count):
            nxt, sec, nsec, snap, wire, status, mac, _net, _hash, tci, tpid = PACKET_HEADER.unpack_from(self.map, at)
            start = at + mac
            if status & TP_STATUS_VLAN_VALID:  # the kernel took the outer tag off: put it back
                proto = tpid if status & TP_STATUS_VLAN_TPID_VALID and tpid else 0x8100
                frames.append(b"".join((view[start:start + 12], struct.pack(">HH", proto, tci),
                                        view[start + 12:start + snap])))
                wire += 4
            else:
                frames.append(bytes(view[start:start + snap]))
            times.append(sec + nsec * 1e-9)
            wirelens.append(wire)
            at += nxt

    def close(self) -> None:
        if self.sock.fileno() < 0:
            return
        self.view.release()
        self.map.close()
        self.sock.close()


def frames_from(frames: list[bytes], times: list[float], wirelens: list[int]) -> Frames:
    """One Frames batch from captured frames (bytes each)."""
    caplen = np.fromiter((len(f) for f in frames), np.int64, len(frames))
    offset = np.zeros(len(frames), np.int64)
    np.cumsum(caplen[:-1], out=offset[1:])
    n = len(frames)
    return Frames(
        data=np.frombuffer(b"".join(frames), np.uint8),
        offset=offset,
        caplen=caplen,
        wirelen=np.asarray(wirelens, np.int64),
        time=np.asarray(times, np.float64),
        linktype=np.full(n, LINKTYPE_ETHERNET, np.uint16),
        weight=np.ones(n, np.float64),
    )


class CaptureSource:
    """Live source: yields Frames as blocks fill, and Watermarks on a quiet link, until closed."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._stop = threading.Event()
        self.ring: Ring | None = None
        self._generator: Generator | None = None

    def batches(self) -> Iterator[Frames | Watermark]:
        """Frames and watermarks until :meth:`stop` or :meth:`close`."""
        self.ring = self.ring or Ring(self.config)
        self._generator = self._batches(self.ring)
        return self._generator

    def _batches(self, ring: Ring) -> Iterator[Frames | Watermark]:
        lag = 2 * self.config.block_timeout_ms / 1000  # a partly filled block may hold this much
        next_mark = time.monotonic() + self.config.watermark_interval
        try:
            while True:
                stopping = self._stop.is_set()
                frames, times, wirelens = ring.read(2 * self.config.block_timeout_ms if stopping else 200)
                if frames:
                    health.count("source.capture.packets", len(frames))
                    yield frames_from(frames, times, wirelens)
                if stopping or time.monotonic() >= next_mark:
                    next_mark = time.monotonic() + self.config.watermark_interval
                    self._report(ring)
                    yield Watermark(time.time() - lag)
                if stopping:
                    return
        finally:
            self._report(ring)
            ring.close()
            self.ring = None

    def _report(self, ring: Ring) -> None:
        if ring.sock.fileno() < 0:
            return
        packets, drops, freezes = ring.statistics()
        health.count("source.capture.kernel_packets", packets)
        health.count("source.capture.kernel_drops", drops)
        if freezes:
            health.count("source.capture.kernel_freezes", freezes)
        if drops:
            log.warning("capture: the kernel dropped packets (ring full); raise ring_mb", drops=drops)

    def stop(self) -> None:
        """Ask :meth:`batches` to drain what the kernel holds and end (safe in a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        """Stop and close the socket now; a generator running in another thread closes it itself."""
        if live.end(self._stop, self._generator) and self.ring is not None:
            self.ring.close()
            self.ring = None
