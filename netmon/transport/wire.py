"""One transport message: a fixed header, the collector id, then OBS_DTYPE rows as raw bytes.

No pickle and no schema guessing: the header names the format and a fingerprint of
:data:`netmon.batch.OBS_DTYPE`, and a message whose magic, format, fingerprint or
length do not fit is refused (:class:`WireError`; the consumer counts and skips it).

Header (network byte order, :data:`HEADER`): magic ``NMOB``, format (u16), kind
(u8: rows, mark or end), id length (u8), OBS_DTYPE fingerprint (u32, CRC-32 of its
description), batch sequence of the collector (u64), the collector's watermark
(f64, UNIX s: nothing older follows from it), then the collector id (UTF-8) and the rows.

Format 2 dropped format 1's lateness (f64) after the watermark: the watermark a
collector sends is already its pipeline's minimum over its sources, each source's
newest row less that source's own lateness, so a scorer has nothing left to apply
it to (as a stream processor's downstream operators take the watermark, never the
sources' allowed lateness). A format-1 message is refused as another release's.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from netmon.batch import OBS_DTYPE

MAGIC = b"NMOB"
FORMAT = 2
HEADER = struct.Struct("!4sHBBIQd")
#: Fingerprint of the row layout: a collector and a scorer of different layouts never mix rows.
DTYPE_CRC = zlib.crc32(repr(OBS_DTYPE.descr).encode())

#: Rows per message at most (about 0.5 MB): under NATS's default 1 MB payload limit.
CHUNK_ROWS = 4000

#: A message's bytes: its own, or a view of a buffer several messages share (:func:`pack`).
Payload = bytes | memoryview

ROWS, MARK, END = 0, 1, 2
KINDS = (ROWS, MARK, END)


class WireError(ValueError):
    """Bytes that are not a message this netmon can read; the text says what is wrong."""


@dataclass(frozen=True)
class Message:
    """One decoded message. ``kind`` ROWS carries rows; MARK only moves the collector's
    watermark; END says the collector stopped cleanly (nothing more follows from it)."""

    kind: int
    collector: str
    seq: int
    watermark: float
    rows: np.ndarray


def _ident(collector: str) -> bytes:
    ident = collector.encode()
    if len(ident) > 255:
        raise ValueError(f"collector id longer than 255 bytes: {collector[:40]!r}...")
    return ident


def row_bytes(rows: np.ndarray) -> np.ndarray:
    """``rows`` (OBS_DTYPE) as a (rows, itemsize) uint8 array, a view unless they were not contiguous."""
    return np.ascontiguousarray(rows, dtype=OBS_DTYPE).view(np.uint8).reshape(rows.shape[0], OBS_DTYPE.itemsize)


def encode(kind: int, collector: str, seq: int, watermark: float, rows: np.ndarray | None = None) -> bytes:
    """The bytes of one message; ``rows`` (OBS_DTYPE) only for kind ROWS."""
    ident = _ident(collector)
    head = HEADER.pack(MAGIC, FORMAT, kind, len(ident), DTYPE_CRC, seq, watermark)
    return b"".join((head, ident, b"" if rows is None else row_bytes(rows)))  # the rows copied once


def pack(collector: str, first_seq: int, watermark: float, rows: np.ndarray,
         chunks: list[np.ndarray]) -> list[memoryview]:
    """ROWS messages, one per array of indices into ``rows`` in ``chunks``, numbered from
    ``first_seq`` on: the bytes :func:`encode` gives for ``rows[chunk]``, but each row copied
    once, straight from ``rows`` into one buffer the messages are views of."""
    ident = _ident(collector)
    raw = row_bytes(rows)
    head = HEADER.size + len(ident)
    sizes = [head + chunk.shape[0] * OBS_DTYPE.itemsize for chunk in chunks]
    buffer = np.empty(sum(sizes), np.uint8)
    messages, at = [], 0
    for seq, (chunk, size) in enumerate(zip(chunks, sizes), start=first_seq):
        message = buffer[at:at + size]
        HEADER.pack_into(message, 0, MAGIC, FORMAT, ROWS, len(ident), DTYPE_CRC, seq, watermark)
        message[HEADER.size:head] = np.frombuffer(ident, np.uint8)
        # mode "clip": indices are in range, and "raise" would copy through a scratch buffer
        np.take(raw, chunk, axis=0, out=message[head:].reshape(chunk.shape[0], OBS_DTYPE.itemsize), mode="clip")
        messages.append(message.data)
        at += size
    return messages


def decode(data: bytes) -> Message:
    """A message from its bytes; WireError when they are not one."""
    if len(data) < HEADER.size:
        raise WireError(f"{len(data)} bytes: shorter than the {HEADER.size}-byte header")
    magic, fmt, kind, id_len, crc, seq, watermark = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError(f"not a netmon observation message (magic {magic!r})")
    if fmt != FORMAT or crc != DTYPE_CRC:
        raise WireError(f"message format {fmt}/{crc:08x}, this netmon reads {FORMAT}/{DTYPE_CRC:08x}: "
                        "collectors and scorers must run the same netmon release")
    if kind not in KINDS:
        raise WireError(f"unknown message kind {kind}")
    start = HEADER.size + id_len
    body = len(data) - start
    if body < 0 or body % OBS_DTYPE.itemsize or (kind != ROWS and body):
        raise WireError(f"body of {body} bytes does not fit kind {kind} rows of {OBS_DTYPE.itemsize} bytes")
    try:
        collector = bytes(data[HEADER.size:start]).decode()
    except UnicodeDecodeError:
        raise WireError("collector id is not UTF-8") from None
    rows = np.frombuffer(data, dtype=OBS_DTYPE, offset=start).copy()  # writable, one copy
    return Message(kind, collector, seq, watermark, rows)
