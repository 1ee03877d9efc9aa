"""Strict servers' rate limiting (KoD RATE) and the clients that honour it.

ntpd with ``restrict ... limited kod`` and its default ``discard minimum 1 average 3``
answers a source address with KoD RATE when its packets come closer than 2 s, or
when they average under 8 s. Modelled per (requesting address, server): a request
is limited when the previous one from the same address came less than
``MINIMUM`` seconds before, or when ``BURST`` requests (itself included) fall
within ``BURST * AVERAGE`` seconds. An iburst of 8 requests 2 s apart is limited
from its 5th packet, as real pool servers do.

Rate limiting is per address, so one NAT gateway or one host with many daemons
draws KoD for the sum of its clients. A client that honours KoD backs off: it
sends nothing more on that stream for 1.5 poll intervals (at least 96 s), which
ends an iburst. Those that ignore it (the runaway daemons, IoT firmware, a flood)
carry on. Honouring removes requests, which only widens gaps, so a second pass
gives the KoD the remaining traffic draws.
"""

from __future__ import annotations

import numpy as np

from netmon.simulate.events import Reply, last_before, select

MINIMUM = 2.0  # seconds, ntpd discard minimum 1 (2^1)
AVERAGE = 8.0  # seconds, ntpd discard average 3 (2^3)
BURST = 5


def _sorted_by(key: np.ndarray, time: np.ndarray) -> np.ndarray:
    return np.lexsort((time, key))


def limited(events: dict[str, np.ndarray], strict: np.ndarray) -> np.ndarray:
    """Mask of requests a strict server answers with KoD RATE."""
    to_strict = strict[events["server"]]
    out = np.zeros(len(events["time"]), dtype=bool)
    idx = np.nonzero(to_strict)[0]
    if len(idx) == 0:
        return out
    key = events["client"][idx].astype(np.int64) * (1 << 22) + events["server"][idx].astype(np.int64)
    time = events["time"][idx]
    order = _sorted_by(key, time)
    key, time = key[order], time[order]
    same = np.concatenate(([False], key[1:] == key[:-1]))
    gap = np.where(same, np.diff(time, prepend=time[0]), np.inf)
    # rank of each request within its key, and the index of the request BURST-1 earlier
    first = np.maximum.accumulate(np.where(~same, np.arange(len(key)), 0))
    back = np.arange(len(key)) - (BURST - 1)
    window = (back >= first) & (time - time[np.maximum(back, 0)] < BURST * AVERAGE)
    out[idx[order]] = (gap < MINIMUM) | window
    return out


def _backed_off(events: dict[str, np.ndarray], kod: np.ndarray) -> np.ndarray:
    """Mask of requests an honouring stream would not send after its last KoD."""
    since = events["time"] - last_before(events["stream"], events["time"], kod)
    backoff = 1.5 * np.maximum(2.0 ** events["poll"].astype(np.float64), 64.0)
    return (since < backoff) & (events["honour"] == 1)


def apply(events: dict[str, np.ndarray], strict: np.ndarray) -> dict[str, np.ndarray]:
    """Events with KoD RATE marked, honouring streams backed off; returns new columns."""
    kod = limited(events, strict)
    events = select(events, ~_backed_off(events, kod))
    kod = limited(events, strict)
    reply = events["reply"].copy()
    reply[kod] = Reply.KOD_RATE
    events["reply"] = reply
    return events
