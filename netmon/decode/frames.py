"""Frames to observations: the decode stage of the pipeline, one batch at a time.

``decode_frames`` finds the UDP/123 packets (:mod:`netmon.decode.packets`), reads
their NTP headers (:mod:`netmon.decode.ntp`) and returns one OBS_DTYPE row per NTP
packet. Units: ``packets`` is the frame's weight (1 for a capture, the sampling
rate for a sampled frame) and ``bytes`` the IP length times that weight.
"""

from __future__ import annotations

import numpy as np

from netmon import health
from netmon.batch import OBS_DTYPE, Frames
from netmon.decode.ntp import decode_ntp
from netmon.decode.packets import udp123


def decode_frames(frames: Frames) -> np.ndarray:
    """OBS_DTYPE rows for the NTP packets in ``frames``, in frame order; the rest counted as skips."""
    return decode_with_index(frames)[0]


def decode_with_index(frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    """``decode_frames`` and, per row, the number of the frame in the batch it came from.

    The frame numbers let evidence reports and tests go back from a row to its bytes.
    """
    health.count("decode.frames", len(frames))
    found = udp123(frames)
    rows = np.zeros(len(found), dtype=OBS_DTYPE)
    if not len(found):
        return rows, found.index
    weight = frames.weight[found.index].astype(np.float64)
    rows["time"] = frames.time[found.index]
    for name in ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "vlan"):
        rows[name] = getattr(found, name)
    rows["packets"] = weight
    rows["bytes"] = found.ip_len * weight
    ntp = decode_ntp(frames.data, found.payload_at, found.payload_len, found.captured, rows)
    health.count("decode.ntp", int(np.count_nonzero(ntp)))
    return rows[ntp], found.index[ntp]
