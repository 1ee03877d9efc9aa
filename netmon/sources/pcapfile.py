"""pcap and pcapng files: read in chunks of Frames, write from Frames.

Reading accepts classic pcap (both byte orders, microsecond and nanosecond magic),
pcapng (section headers in both byte orders, interface blocks with ``if_tsresol``,
enhanced, simple and obsolete packet blocks) and either of them gzip-compressed
(recognised by its magic, not its name). Frames come out in chunks with one
contiguous buffer each, so decoding runs once per chunk, never per packet.

A corrupt or cut file raises :class:`CaptureError` naming the byte offset (in the
uncompressed stream) after every frame before it has been yielded, and counts
``source.pcap.corrupt`` in health; nothing before the fault is lost.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from netmon import health
from netmon.batch import Frames

try:
    from netmon.sources._pcapwalk import walk as _compiled_walk
except ImportError:  # an install without a C compiler: the walk in Python (setup.py)
    _compiled_walk = None

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
GZIP_MAGIC = b"\x1f\x8b"
CHUNK_FRAMES = 65536
READ_BYTES = 4 << 20


class CaptureError(ValueError):
    """A capture file that cannot be read past ``offset`` (bytes into the uncompressed stream)."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: {reason} at byte offset {offset}; frames before it were kept")
        self.path = path
        self.offset = offset
        self.reason = reason


# ---------------------------------------------------------------------------- writing


def _time_parts(time: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, fraction in 1/scale units) with rounding carried into seconds."""
    seconds = np.floor(time).astype(np.int64)
    fraction = np.rint((time - seconds) * scale).astype(np.int64)
    carry = fraction >= scale
    return seconds + carry, np.where(carry, fraction - scale, fraction)


def pcap_records(frames: Frames, lo: int, hi: int, nanosecond: bool = False) -> bytes:
    """Classic pcap records (16-byte little-endian headers + data) for frames ``lo:hi``.

    One ``bytes.join`` over header and data slices: each byte is copied once, in C.
    """
    caplen = frames.caplen[lo:hi].astype(np.int64)
    seconds, fraction = _time_parts(frames.time[lo:hi], 1_000_000_000 if nanosecond else 1_000_000)
    header = np.empty((len(caplen), 4), dtype="<u4")
    header[:, 0] = seconds
    header[:, 1] = fraction
    header[:, 2] = caplen
    header[:, 3] = np.maximum(frames.wirelen[lo:hi], caplen)
    heads = memoryview(header).cast("B")
    data = memoryview(np.ascontiguousarray(frames.data)).cast("B")
    starts = frames.offset[lo:hi].tolist()
    return b"".join(
        piece
        for i, (start, size) in enumerate(zip(starts, caplen.tolist()))
        for piece in (heads[16 * i:16 * i + 16], data[start:start + size])
    )


def pcap_header(linktype: int, nanosecond: bool = False, snaplen: int = 262144) -> bytes:
    """The 24-byte classic pcap file header (little-endian)."""
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def write_pcap(path: str | Path, frames: Frames, linktype: int | None = None, nanosecond: bool = False) -> None:
    """Write ``frames`` as a classic little-endian pcap file (gzip-compressed if ``path`` ends in .gz).

    ``linktype`` defaults to the frames' own (they must all share one); time is
    written with microsecond or, with ``nanosecond``, nanosecond resolution.
    """
    if linktype is None:
        kinds = np.unique(frames.linktype) if len(frames) else np.array([1])
        if len(kinds) != 1:
            raise ValueError(f"frames mix link types {kinds.tolist()}; a pcap file holds one")
        linktype = int(kinds[0])
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as out:
        out.write(pcap_header(linktype, nanosecond))
        for lo in range(0, len(frames), CHUNK_FRAMES):
            out.write(pcap_records(frames, lo, min(lo + CHUNK_FRAMES, len(frames)), nanosecond))


# ---------------------------------------------------------------------------- reading

MAX_CAPLEN = 262144 * 4
MAX_BLOCK = 64 << 20
EPB, SPB, OPB, IDB = 6, 3, 2, 1
KIND_SHIFT = 48


class _Stream:
    """Buffered bytes of a (possibly gzip-compressed) file with the file offset of ``buf[0]``."""

    def __init__(self, path: str | Path, progress: Callable[[int], None] | None = None) -> None:
        self.path = str(path)
        self.progress = progress
        raw: BinaryIO = open(path, "rb")
        magic = raw.read(2)
        raw.seek(0)
        self.file: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if magic == GZIP_MAGIC else raw
        self.raw = raw
        self.buf = memoryview(b"")
        self.base = 0
        self.eof = False
        self.damage: CaptureError | None = None

    def fill(self, need: int = 1) -> bool:
        """Read more until at least ``need`` bytes are buffered; False at end of file.

        Reads straight into a fresh buffer behind the bytes still unread: one copy
        per byte, and earlier buffers (held by Frames already yielded) stay intact.
        The buffer is not zeroed first (every byte ``buf`` shows was read), and ``buf``
        is a view of it, so consuming bytes copies nothing.
        """
        while len(self.buf) < need and not self.eof:
            have = len(self.buf)
            view = memoryview(np.empty(max(have + READ_BYTES, need), dtype=np.uint8))
            view[:have] = self.buf
            got = have
            while got < len(view):
                try:
                    n = self._read_into(view[got:])
                except (OSError, EOFError, zlib.error) as exc:
                    self.damage = CaptureError(
                        self.path, self.base + got,
                        f"compressed stream is damaged near compressed byte {self.raw.tell()} ({exc})",
                    )
                    n = 0
                if not n:
                    self.eof = True
                    break
                got += n
            self.buf = view[:got]
            if self.progress is not None:
                self.progress(self.raw.tell())
        return len(self.buf) >= need

    def _read_into(self, view: memoryview) -> int:
        """Fill ``view`` from the file; a gzip stream one decompressed piece at a time,
        so a damaged stream loses nothing that decompressed before the damage."""
        if self.file is self.raw:
            return self.file.readinto(view)
        piece = self.file.read1(len(view))
        view[:len(piece)] = piece
        return len(piece)

    def cut(self, reason: str) -> CaptureError:
        """The error for bytes left over at the end: the stream's damage if there was any."""
        return self.damage or CaptureError(self.path, self.base, reason)

    def consume(self, n: int) -> None:
        self.buf = self.buf[n:]
        self.base += n

    def close(self) -> None:
        self.file.close()
        self.raw.close()


def read_frames(path: str | Path, progress: Callable[[int], None] | None = None) -> Iterator[Frames]:
    """Frames of a pcap, pcapng or gzip-compressed capture, a chunk at a time.

    Raises :class:`CaptureError` (after yielding every frame before the fault) for
    a file that is not a capture, is corrupt, or ends inside a record.
    ``progress`` is called with the bytes of the file read so far (compressed
    bytes for a gzip file), once per chunk.
    """
    stream = _Stream(path, progress)
    try:
        if not stream.fill(4):
            raise stream.damage or CaptureError(stream.path, 0, "not a pcap or pcapng file (too short)")
        magic_le = struct.unpack_from("<I", stream.buf)[0]
        magic_be = struct.unpack_from(">I", stream.buf)[0]
        if magic_le == PCAPNG_SHB:
            yield from _read_pcapng(stream)
        elif PCAP_MAGIC_US in (magic_le, magic_be) or PCAP_MAGIC_NS in (magic_le, magic_be):
            yield from _read_pcap(stream, "<" if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">")
        else:
            raise CaptureError(stream.path, 0, f"not a pcap or pcapng file (magic 0x{magic_le:08x})")
        if stream.damage:
            raise stream.damage
    except CaptureError:
        health.count("source.pcap.corrupt")
        raise
    finally:
        stream.close()


def _gather_u32(buf: bytes, at: np.ndarray, words: int, endian: str) -> np.ndarray:
    """``words`` 32-bit integers starting at each ``at``, as an (n, words) int64 matrix.

    When every run of words lies inside ``buf`` (a walk's records always do), each
    position's words are one gather of ``4 * words`` bytes through a view of ``buf``
    at every byte offset (stride 1); otherwise each word is its own gather and
    positions past the end read the last word (callers check lengths).
    """
    out = np.zeros((len(at), words), dtype=np.int64)
    size = 4 * words
    if len(buf) < 4:
        return out
    if len(buf) >= size and (not len(at) or int(at.max()) + size <= len(buf)):
        rows = np.ndarray(shape=(len(buf) - size + 1,), dtype=f"V{size}", buffer=buf, strides=(1,))[at]
        out[:] = rows.view(endian + "u4").reshape(len(at), words)
        return out
    view = np.ndarray(shape=(len(buf) - 3,), dtype=endian + "u4", buffer=buf, strides=(1,))
    for k in range(words):
        out[:, k] = view[np.minimum(at + 4 * k, len(buf) - 4)]
    return out


def _walk_pcap(buf: bytes, pos: int, big_endian: bool) -> np.ndarray:
    """Positions of consecutive pcap record headers from ``pos`` (int64).

    The one loop over every record that numpy cannot do: compiled (``_pcapwalk``, built at
    install, GIL released) where the install had a C compiler, else :func:`_walk_pcap_python`;
    both list the same positions. Bounds and sanity checks are done afterwards on whole
    arrays. The positions may end with records cut by the end of ``buf`` (or garbage after
    a corrupt length).
    """
    if _compiled_walk is None:
        return _walk_pcap_python(buf, pos, big_endian)
    return np.frombuffer(_compiled_walk(buf, pos, big_endian), dtype=np.int64)


def _walk_pcap_python(buf: bytes, pos: int, big_endian: bool) -> np.ndarray:
    """:func:`_walk_pcap` in Python: one unpack and one append per record (~200 ns)."""
    positions: list[int] = []
    append = positions.append
    unpack = struct.Struct(">I" if big_endian else "<I").unpack_from
    try:
        while True:
            append(pos)
            pos += 16 + unpack(buf, pos + 8)[0]
    except struct.error:
        pass
    return np.asarray(positions, dtype=np.int64)


def _read_pcap(stream: _Stream, endian: str) -> Iterator[Frames]:
    if not stream.fill(24):
        raise CaptureError(stream.path, len(stream.buf), "file ends inside the pcap file header")
    magic, _, _, _, _, snaplen, network = struct.unpack_from(endian + "IHHiIII", stream.buf)
    scale = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
    linktype = network & 0xFFFF
    limit = max(snaplen, MAX_CAPLEN)
    stream.consume(24)
    need = READ_BYTES
    while stream.fill(need) or stream.buf:
        buf = stream.buf
        block = np.frombuffer(buf, dtype=np.uint8)
        at = _walk_pcap(buf, 0, endian == ">")
        at = at[at + 16 <= len(buf)]
        head = _gather_u32(buf, at, 4, endian)
        caplen = head[:, 2]
        whole = (at + 16 + caplen <= len(buf)) & (caplen <= limit)
        good = len(whole) if whole.all() else int(np.argmin(whole))
        if good:
            yield _frames(block, at[:good] + 16, caplen[:good], head[:good, 3],
                          head[:good, 0] + head[:good, 1] * scale, np.full(good, linktype))
        if good < len(whole) and caplen[good] > limit:
            raise CaptureError(stream.path, stream.base + int(at[good]),
                               f"corrupt pcap record (captured length {int(caplen[good])} > {limit})")
        stream.consume(int(at[good]) if good < len(at) else int(at[-1] + 16 + caplen[-1]) if len(at) else 0)
        if stream.eof and stream.buf:
            raise stream.cut("file ends inside a pcap record (cut capture)")
        need = max(READ_BYTES, 16 + int(caplen[good]) if good < len(caplen) else 16)


def _frames(block: np.ndarray, offset: np.ndarray, caplen: np.ndarray, wirelen: np.ndarray,
            time: np.ndarray, linktype: np.ndarray) -> Frames:
    n = len(offset)
    health.count("source.pcap.frames", n)
    return Frames(
        data=block,
        offset=offset,
        caplen=caplen,
        wirelen=np.maximum(wirelen, caplen),
        time=time.astype(np.float64),
        linktype=linktype.astype(np.uint16),
        weight=np.ones(n, dtype=np.float64),
    )


class _Interface:
    """A pcapng interface description: link type, snap length and clock."""

    def __init__(self, linktype: int, snaplen: int, units: int = 1_000_000, offset: int = 0) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.units = units
        self.offset = offset


def _parse_idb(buf: bytes, pos: int, blen: int, endian: str) -> _Interface:
    linktype, _, snaplen = struct.unpack_from(endian + "HHI", buf, pos + 8)
    interface = _Interface(linktype, snaplen)
    opt, end = pos + 16, pos + blen - 4
    while opt + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, opt)
        if code == 0:
            break
        if code == 9 and length >= 1:
            resol = buf[opt + 4]
            interface.units = 2 ** (resol & 0x7F) if resol & 0x80 else 10 ** resol
        elif code == 14 and length >= 8:
            interface.offset = struct.unpack_from(endian + "q", buf, opt + 4)[0]
        opt += 4 + (length + 3) // 4 * 4
    return interface


def _walk_pcapng(buf: bytes, pos: int, head: struct.Struct, positions: list[int]) -> int:
    """Append positions of consecutive enhanced packet blocks from ``pos``; return where the run stops.

    Stops at any other block type (handled one at a time by the caller) or at the
    end of ``buf``; the last block appended may run past the end of ``buf``.
    """
    append = positions.append
    unpack = head.unpack_from
    try:
        while True:
            btype, blen = unpack(buf, pos)
            if btype != EPB or blen < 32:
                return pos
            append(pos)
            pos += blen
    except struct.error:
        return pos


def _read_pcapng(stream: _Stream) -> Iterator[Frames]:
    endian = "<"
    interfaces: list[_Interface] = []
    need = READ_BYTES
    while stream.fill(need) or stream.buf:
        buf = stream.buf
        positions: list[int] = []
        pos = 0
        error = ""
        need = READ_BYTES
        short = False
        head = struct.Struct(endian + "II")
        while True:
            before = len(positions)
            pos = _walk_pcapng(buf, pos, head, positions)
            if len(positions) > before and positions[-1] + head.unpack_from(buf, positions[-1])[1] > len(buf):
                pos = positions.pop()
            if pos + 12 > len(buf):
                need, short = pos + 12, True
                break
            btype, blen = head.unpack_from(buf, pos)
            if btype == PCAPNG_SHB:
                if positions:
                    break
                bom = struct.unpack_from("<I", buf, pos + 8)[0]
                if bom not in (PCAPNG_BOM, 0x4D3C2B1A):
                    error = f"corrupt pcapng section header (byte-order magic 0x{bom:08x})"
                    break
                endian = "<" if bom == PCAPNG_BOM else ">"
                head = struct.Struct(endian + "II")
                blen = head.unpack_from(buf, pos)[1]
                interfaces = []
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                error = f"corrupt pcapng block (type 0x{btype:08x}, length {blen})"
                break
            if pos + blen > len(buf):
                need, short = pos + blen, True
                break
            if btype == IDB:
                interfaces.append(_parse_idb(buf, pos, blen, endian))
            elif btype in (SPB, OPB):
                positions.append(pos | (btype << KIND_SHIFT))
            elif btype == EPB:
                error = f"corrupt enhanced packet block (length {blen} < 32)"
                break
            pos += blen
        frames, bad = _pcapng_frames(buf, positions, interfaces, endian)
        if len(frames):
            yield frames
        if bad >= 0:
            raise CaptureError(stream.path, stream.base + bad, "corrupt pcapng packet block (bad length or interface)")
        if error:
            raise CaptureError(stream.path, stream.base + pos, error)
        stream.consume(pos)
        if short and stream.eof and stream.buf:
            raise stream.cut("file ends inside a pcapng block (cut capture)")
        need = max(READ_BYTES, need - pos)


def _pcapng_frames(buf: bytes, positions: list[int], interfaces: list[_Interface], endian: str) -> tuple[Frames, int]:
    """Frames of the packet blocks at ``positions``, and the offset of the first bad one (-1 if none)."""
    block = np.frombuffer(buf, dtype=np.uint8)
    tagged = np.asarray(positions, dtype=np.int64)
    kind = tagged >> KIND_SHIFT
    at = tagged & ((1 << KIND_SHIFT) - 1)
    words = _gather_u32(buf, at, 8, endian)
    blen = words[:, 1]
    epb, spb = kind == 0, kind == SPB
    opb = kind == OPB
    iface = np.where(epb, words[:, 2], np.where(opb, words[:, 2] & 0xFFFF if endian == "<" else words[:, 2] >> 16, 0))
    ts = np.where(spb, 0, words[:, 3] << 32 | words[:, 4])
    caplen = np.where(epb | opb, words[:, 5], np.minimum(words[:, 2], blen - 16))
    wirelen = np.where(epb | opb, words[:, 6], words[:, 2])
    offset = at + np.where(spb, 12, 28)
    room = np.where(spb, blen - 16, blen - 32)
    known = len(interfaces)
    bad = (iface >= known) | (caplen > room) | (caplen < 0)
    first_bad = -1
    if bad.any():
        cut = int(np.argmax(bad))
        first_bad = int(at[cut])
        kind, at, iface, ts, caplen, wirelen, offset, spb = (
            a[:cut] for a in (kind, at, iface, ts, caplen, wirelen, offset, spb)
        )
    table = interfaces or [_Interface(0, 0)]
    linktype = np.array([i.linktype for i in table], dtype=np.int64)[iface]
    snaplen = np.array([i.snaplen or MAX_CAPLEN for i in table], dtype=np.int64)[iface]
    caplen = np.where(spb, np.minimum(caplen, snaplen), caplen)
    units = np.array([i.units for i in table], dtype=np.float64)[iface]
    units_int = np.array([min(i.units, 1 << 62) for i in table], dtype=np.int64)[iface]
    tsoff = np.array([i.offset for i in table], dtype=np.float64)[iface]
    seconds = ts // units_int
    time = seconds + (ts - seconds * units_int) / units + tsoff
    if spb.any():
        last = np.maximum.accumulate(np.where(spb, 0, np.arange(len(time))))
        time = np.where(spb, np.where(last > 0, time[last], 0.0), time)
    return _frames(block, offset, caplen, wirelen, time, linktype), first_bad
