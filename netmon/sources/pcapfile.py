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
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from netmon import health
from netmon.batch import Frames

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


def _gather(frames: Frames, lo: int, hi: int) -> np.ndarray:
    """The captured bytes of frames ``lo:hi`` back to back."""
    offset = frames.offset[lo:hi].astype(np.int64)
    caplen = frames.caplen[lo:hi].astype(np.int64)
    if hi <= lo:
        return np.zeros(0, dtype=np.uint8)
    if np.array_equal(offset[1:], offset[:-1] + caplen[:-1]):
        return frames.data[offset[0]:offset[-1] + caplen[-1]]
    starts = np.repeat(offset - np.concatenate(([0], np.cumsum(caplen)[:-1])), caplen)
    return frames.data[starts + np.arange(int(caplen.sum()))]


def pcap_records(frames: Frames, lo: int, hi: int, nanosecond: bool = False) -> bytes:
    """Classic pcap records (16-byte little-endian headers + data) for frames ``lo:hi``."""
    caplen = frames.caplen[lo:hi].astype(np.int64)
    m = len(caplen)
    seconds, fraction = _time_parts(frames.time[lo:hi], 1_000_000_000 if nanosecond else 1_000_000)
    header = np.empty((m, 4), dtype="<u4")
    header[:, 0] = seconds
    header[:, 1] = fraction
    header[:, 2] = caplen
    header[:, 3] = np.maximum(frames.wirelen[lo:hi], caplen)
    sizes = caplen + 16
    at = np.zeros(m, dtype=np.int64)
    if m:
        np.cumsum(sizes[:-1], out=at[1:])
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    is_data = np.ones(len(out), dtype=bool)
    is_data[(at[:, None] + np.arange(16)).ravel()] = False
    out[is_data] = _gather(frames, lo, hi)
    out[~is_data] = header.view(np.uint8).ravel()
    return out.tobytes()


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
