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


def pack(features: Mapping[str, np.ndarray], names: Sequence[str], n: int,
         order: np.ndarray | None = None) -> list[bytes]:
    """One blob per row for ``n`` rows of ``features`` (float columns; a name missing
    from ``features`` is NaN in every row), in the layout ``names``; the rows in
    ``order`` (indexes) when given.

    Works column by column (masks are feature-major, so every numpy pass is contiguous);
    columns that are all NaN or all zero cost no per-row work beyond their bits."""
    nan = np.zeros((len(names), n), dtype=bool)
    zero = np.zeros((len(names), n), dtype=bool)
    kept: list[np.ndarray] = []
    where: list[int] = []
    for j, name in enumerate(names):
        column = features.get(name)
        if column is None:
            nan[j] = True
            continue
        column = np.asarray(column, dtype=np.float64)
        np.isnan(column, out=nan[j])
        np.equal(column, 0.0, out=zero[j])
        if not (nan[j] | zero[j]).all():
            kept.append(column)
            where.append(j)
    bits = np.concatenate([np.packbits(nan, axis=0, bitorder="little"),
                           np.packbits(zero, axis=0, bitorder="little")])
    head = bits.T.tobytes()  # row-major: each row's NaN bits, then its zero bits
    size = bits.shape[0]
    if kept:
        keep = ~(nan[where] | zero[where])
        values = np.stack(kept).T[keep.T].astype("<f8").tobytes()
        ends = np.cumsum(keep.sum(axis=0)) * 8
    else:
        values, ends = b"", np.zeros(n, dtype=np.int64)
    stops = ends.astype(np.int64)
    starts = stops - np.diff(stops, prepend=0)
    rows = np.arange(n) if order is None else np.asarray(order)
    return [head[h:h + size] + values[a:e]
            for h, a, e in zip((rows * size).tolist(), starts[rows].tolist(), stops[rows].tolist())]


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
