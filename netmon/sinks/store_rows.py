"""The embedded store's packed feature rows: one BLOB per host-interval instead of one
REAL column per feature.

Why: binding ~60 parameters per row cost the store most of its time, and SQLite's
write cost grows with the bytes it writes, so the row must be both one value and small.
Most features of most hosts are 0 or unknown, so a row keeps two bitmaps and only
the other values:

* ``width = ceil(len(names) / 8)`` bytes: bit ``j`` (little-endian bit order, byte
  ``j // 8``) set when feature ``j`` of the layout is NaN (unknown);
* ``width`` bytes: bit ``j`` set when feature ``j`` is 0.0;
* then every other value, in layout order, as a little-endian IEEE float64 (exact:
  what is read back is what was written, -0.0 aside, which reads back as 0.0).

A *layout* is the ordered list of feature names a blob holds; the store keeps each
layout it ever wrote in its ``layouts`` table under a small integer id stored with the
row, so a feature added or removed later gives a new layout and old rows stay readable.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

import numpy as np

#: Rows packed together: large enough that numpy's per-call cost is nothing per row, small
#: enough that a block's temporaries (~200 bytes a row) stay in the CPU's cache.
BLOCK = 8192


def pack(features: Mapping[str, np.ndarray], names: Sequence[str], n: int,
         order: np.ndarray | None = None) -> list[bytes]:
    """One blob per row for ``n`` rows of ``features`` (float columns; a name missing
    from ``features`` is NaN in every row), in the layout ``names``; the rows in
    ``order`` (indexes) when given.

    Rows are packed in blocks of :data:`BLOCK` in their own order (contiguous slices,
    numpy temporaries that stay in cache and reuse their memory), each block laid out in
    one buffer, so Python's only per-row work is one slice of it; ``order`` then
    permutes the finished blobs (joining two slices a row, on rows gathered in
    ``order``, was half of the store's time)."""
    columns = [features.get(name) for name in names]
    columns = [None if c is None else np.asarray(c, dtype=np.float64) for c in columns]
    blobs: list[bytes] = []
    for lo in range(0, n, BLOCK):
        blobs.extend(_pack_block(columns, lo, min(n, lo + BLOCK)))
    if order is None:
        return blobs
    table = np.empty(n, dtype=object)
    table[:] = blobs
    return table[np.asarray(order, dtype=np.intp)].tolist()


def _pack_block(columns: list[np.ndarray | None], lo: int, hi: int) -> list[bytes]:
    """The blobs of rows ``lo:hi``. Masks are feature-major (contiguous passes); columns
    NaN or zero in every row of the block cost nothing beyond their bits."""
    count = hi - lo
    nan = np.zeros((len(columns), count), dtype=bool)
    zero = np.zeros((len(columns), count), dtype=bool)
    kept: list[np.ndarray] = []
    for j, column in enumerate(columns):
        if column is None:
            nan[j] = True
            continue
        part = column[lo:hi]
        np.isnan(part, out=nan[j])
        np.equal(part, 0.0, out=zero[j])
        if not (nan[j] | zero[j]).all():
            kept.append(part)
    head = np.ascontiguousarray(np.concatenate([np.packbits(nan, axis=0, bitorder="little"),
                                                np.packbits(zero, axis=0, bitorder="little")]).T)
    matrix = np.ascontiguousarray(np.stack(kept).T) if kept else np.zeros((count, 0))
    keep = ~(np.isnan(matrix) | (matrix == 0.0))
    values = matrix[keep]  # row-major: each row's values in layout order
    per_row = keep.sum(axis=1)
    size = head.shape[1]
    stops = np.cumsum(size + 8 * per_row)
    starts = stops - (size + 8 * per_row)
    out = np.empty(int(stops[-1]), dtype=np.uint8)
    _put(out, starts, head)
    if values.size:
        # a row's k-th value starts at starts + size + 8k, and starts = size * row + 8 * (values in earlier rows)
        at = 8 * np.arange(values.size) + size * np.repeat(np.arange(1, count + 1), per_row)
        np.ndarray((out.size - 7,), dtype="<f8", buffer=out, strides=(1,))[at] = values
    data = out.tobytes()
    return [data[a:e] for a, e in zip(starts.tolist(), stops.tolist())]


def _put(out: np.ndarray, at: np.ndarray, block: np.ndarray) -> None:
    """Write row i of ``block`` (uint8, rows of s bytes) to ``out[at[i]:at[i] + s]``, eight
    bytes at a time (a view of ``out`` whose element i is the word at byte i; the last
    word may overlap the one before)."""
    size = block.shape[1]
    if size < 8 or not len(at):
        for b in range(size):
            out[at + b] = block[:, b]
        return
    words = np.ndarray((out.size - 7,), dtype="<u8", buffer=out, strides=(1,))
    for b in (*range(0, size - 7, 8), size - 8):
        words[at + b] = np.ascontiguousarray(block[:, b:b + 8]).view("<u8").ravel()


def unpack(blob: bytes, names: Sequence[str]) -> dict[str, float]:
    """The features of one packed row, by name (NaN where unknown).

    A blob that does not fit the layout (damaged, or a wrong layout id) is a ValueError."""
    width = (len(names) + 7) // 8
    if len(blob) < 2 * width:
        raise ValueError(f"packed features of {len(blob)} bytes, shorter than the layout's {2 * width} bytes of bits")
    nan = int.from_bytes(blob[:width], "little")
    zero = int.from_bytes(blob[width:2 * width], "little")
    present = [j for j in range(len(names)) if not (nan >> j) & 1 and not (zero >> j) & 1]
    if len(blob) != 2 * width + 8 * len(present) or (nan | zero) >> len(names):
        raise ValueError(f"packed features of {len(blob)} bytes do not fit the layout of {len(names)} features")
    row = {name: (math.nan if (nan >> j) & 1 else 0.0) for j, name in enumerate(names)}
    row.update(zip((names[j] for j in present), struct.unpack_from(f"<{len(present)}d", blob, 2 * width)))
    return row
