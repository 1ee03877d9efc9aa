"""Strict servers' rate limiting (KoD RATE) and the clients that honour it.

ntpd with ``restrict ... limited kod`` and its default ``discard minimum 1 average 3``
keeps a leaky bucket per source address (``ntp_monitor``): each packet adds
``HEAD`` = 2^3 s, the bucket leaks one second per second, and a packet is limited
(answered with KoD RATE) when it comes within a second of the previous one or
when the bucket holds more than ``LIMIT`` = 8 x ``HEAD``. An iburst (8 packets 2 s
apart) stays under the limit; one more daemon every hour soon does not.

Rate limiting is per address, so one NAT gateway or one host with many daemons
draws KoD for the sum of its clients. A client that honours KoD backs off: it
sends nothing more on that stream for 1.5 poll intervals (at least 96 s). Those
that ignore it (the runaway daemons, IoT firmware, a flood) carry on. Honouring
removes requests, which only widens gaps, so a second pass gives the KoD the
remaining traffic draws.
"""

from __future__ import annotations

import numpy as np

from netmon.simulate.events import Reply, last_before, select

HEAD = 8.0  # seconds added per packet: 2^(discard average 3)
LIMIT = 8 * HEAD  # bucket level beyond which packets are limited
MINIMUM = 1.0  # seconds: a packet closer than this to the previous one is limited


def _bucket(times: list[float]) -> list[bool]:
    """ntpd's leaky bucket over one address's packet times (sorted): which are limited."""
    out = []
    level, last = 0.0, -np.inf
    for t in times:
        gap = t - last
        last = t
        level = max(0.0, level - gap)
        if gap < MINIMUM or level > LIMIT:
            out.append(True)
        else:
            level += HEAD
            out.append(False)
    return out


def limited(events: dict[str, np.ndarray], strict: np.ndarray) -> np.ndarray:
    """Mask of requests a strict server answers with KoD RATE."""
    out = np.zeros(len(events["time"]), dtype=bool)
    idx = np.nonzero(strict[events["server"]])[0]
    if len(idx) == 0:
        return out
    key = events["client"][idx].astype(np.int64) * (1 << 22) + events["server"][idx].astype(np.int64)
    time = events["time"][idx]
    order = np.lexsort((time, key))
    key, time, idx = key[order], time[order], idx[order]
    starts = np.concatenate(([0], np.nonzero(key[1:] != key[:-1])[0] + 1, [len(key)]))
    gap = np.diff(time, prepend=-np.inf)
    gap[starts[:-1]] = np.inf
    # only addresses that ever come faster than the bucket drains can be limited
    busy = np.nonzero(np.add.reduceat(gap < HEAD, starts[:-1]) > 0)[0]
    for group in busy:
        lo, hi = starts[group], starts[group + 1]
        out[idx[lo:hi]] = _bucket(time[lo:hi].tolist())
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
