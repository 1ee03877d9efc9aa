"""Many UDP datagrams per system call: Linux ``recvmmsg(2)`` through ctypes, into one preallocated buffer.

Python's socket module reads one datagram per call, and on loopback a call costs
about as much as the kernel's own work for the datagram. ``recvmmsg`` fills up to
``vlen`` fixed-size slots of one buffer in one call (measured here: 0.85-0.93 µs
per 1400-byte datagram against 1.2-1.4 µs for ``recvfrom``); the lengths and sender
addresses come back as numpy columns, so nothing runs in Python per datagram.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

import numpy as np

#: One receive slot: larger than any UDP payload, so no datagram is cut short.
SLOT = 65536
#: Slots one call may fill (virtual memory: vlen x SLOT; only what datagrams touch is resident).
VLEN = 256
_MSG_DONTWAIT = 0x40
#: sockaddr_in6 is the larger of the two socket address structures.
_NAME_LEN = 28
#: An IPv4 address as IPv6: ::ffff:a.b.c.d (RFC 4291 2.5.5.2).
_MAPPED = np.dtype([("prefix", "V12"), ("v4", "V4")])
_MAPPED_PREFIX = np.void(b"\0" * 10 + b"\xff\xff")


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_IOVec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


#: The fields of the mmsghdr array read and reset as numpy columns (native byte order).
_HEADERS = np.dtype({"names": ["namelen", "flags", "len"], "formats": ["u4", "i4", "u4"],
                     "offsets": [_MMsgHdr.hdr.offset + _MsgHdr.namelen.offset, _MMsgHdr.hdr.offset + _MsgHdr.flags.offset,
                                 _MMsgHdr.len.offset],
                     "itemsize": ctypes.sizeof(_MMsgHdr)})
#: sockaddr_in / sockaddr_in6 as bytes: family (native), port (network order), IPv4 at 4, IPv6 at 8.
_NAMES = np.dtype({"names": ["family", "port", "v4", "v6"], "formats": ["u2", ">u2", "V4", "V16"],
                   "offsets": [0, 2, 4, 8], "itemsize": _NAME_LEN})

#: SO_MEMINFO (Linux 3.x): the socket's memory counters; SK_MEMINFO_DROPS is the ninth.
_SO_MEMINFO = 55
_MEMINFO = struct.Struct("9I")

_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int


class BatchReceiver:
    """Reads a non-blocking UDP socket ``vlen`` datagrams at a time; one per socket, used by one thread."""

    def __init__(self, sock: socket.socket, vlen: int = VLEN, slot: int = SLOT) -> None:
        self.fd = sock.fileno()
        self.vlen, self.slot = vlen, slot
        self._buffer = (ctypes.c_char * (vlen * slot))()
        self._names = (ctypes.c_char * (vlen * _NAME_LEN))()
        self._iov = (_IOVec * vlen)()
        self._msgs = (_MMsgHdr * vlen)()
        base, names = ctypes.addressof(self._buffer), ctypes.addressof(self._names)
        for i in range(vlen):
            self._iov[i].base, self._iov[i].length = base + i * slot, slot
            hdr = self._msgs[i].hdr
            hdr.name, hdr.iov, hdr.iovlen = names + i * _NAME_LEN, ctypes.pointer(self._iov[i]), 1
        self._headers = np.frombuffer(self._msgs, _HEADERS)
        self._sockaddrs = np.frombuffer(self._names, _NAMES)
        self.data = np.frombuffer(self._buffer, np.uint8)

    def receive(self) -> int:
        """Datagrams read now (0 when none is waiting); raises OSError for errors other than EAGAIN/EINTR."""
        self._headers["namelen"] = _NAME_LEN
        got = _recvmmsg(self.fd, self._msgs, self.vlen, _MSG_DONTWAIT, None)
        if got < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        return got

    def lengths(self, count: int) -> np.ndarray:
        """Payload bytes of the first ``count`` datagrams."""
        return self._headers["len"][:count].astype(np.uint32)

    def payloads(self, lengths: np.ndarray) -> bytes:
        """The first ``len(lengths)`` payloads back to back (``lengths``: from :meth:`lengths`)."""
        view = memoryview(self._buffer).cast("B")
        slot = self.slot
        return b"".join([view[i * slot : i * slot + n] for i, n in enumerate(lengths.tolist())])

    def senders(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(16-byte IPv6 address, or IPv4-mapped for IPv4 senders, as V16; port) of the first ``count`` datagrams."""
        names = self._sockaddrs[:count]
        addresses = names["v6"].copy()
        v4 = names["family"] == socket.AF_INET
        if v4.any():
            mapped = np.empty(int(np.count_nonzero(v4)), _MAPPED)
            mapped["prefix"], mapped["v4"] = _MAPPED_PREFIX, names["v4"][v4]
            addresses[v4] = mapped.view("V16")
        return addresses, names["port"].astype(np.uint16)


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for ``sock`` so far (its receive buffer was full), None where
    the kernel does not say (before Linux 4.6). A 32-bit counter: callers take differences modulo 2^32."""
    try:
        return _MEMINFO.unpack(sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO.size))[8]
    except (OSError, struct.error):
        return None
