"""Strict servers' rate limiting (KoD RATE) and the clients that honour it.

Two limiters, as the daemons implement them, both keyed by the client's address
(so one NAT gateway or one host with many daemons is judged on the sum of its
clients):

* classic ntpd with ``restrict ... limited kod`` and its default ``discard minimum 1
  average 3`` keeps a leaky bucket per address (``ntp_monitor``): each packet adds
  ``HEAD`` = 2^3 s, the bucket leaks one second per second, and a packet is limited
  (answered with KoD RATE) when it comes within a second of the previous one or
  when the bucket holds more than ``LIMIT`` = 8 x ``HEAD``. An iburst (8 packets 2 s
  apart) stays under the limit; one more daemon every hour soon does not.
* ntpsec (``ntpd/ntp_monitor.c``) keeps a score per address instead: it decays
  with a 20 s time constant and each packet adds 1/20, so it approaches the
  packet rate per second. At a score of 1 packets are limited; up to a score of
  1.5 they draw a KoD, above it they are dropped unanswered ("much abusive
  traffic is big bursts": no KoD, so the server cannot be used as a reflector).

A client that honours KoD backs off (``netmon.simulate.events.Honour``): ntpd
sends nothing more on that stream for 1.5 poll intervals (at least 96 s);
chronyd's next request waits 4 extra poll intervals (``ntp_core.c``: ``delay_time
+= 4 * 2^local_poll``), each instance on its own. Those that ignore it (the
shared-socket runaway, IoT firmware, a flood) carry on. Honouring removes
requests, which only widens gaps, so a second pass gives the KoD the remaining
traffic draws.
"""

from __future__ import annotations

import math

import numpy as np

from netmon.simulate.events import Honour, Reply, select

HEAD = 8.0  # seconds added per packet: 2^(discard average 3)
LIMIT = 8 * HEAD  # bucket level beyond which packets are limited
MINIMUM = 1.0  # seconds: a packet closer than this to the previous one is limited
DECAY = 20.0  # seconds: ntpsec's score time constant (mon_data.decay_time)
RATE_LIMIT = 1.0  # ntpsec: score from which packets are limited (mon_data.rate_limit)
KOD_LIMIT = 0.5  # ntpsec: above RATE_LIMIT + KOD_LIMIT limited packets get no KoD
#: per Honour value: poll intervals a stream stays quiet after a KoD
BACKOFF = np.array([0.0, 1.5, 4.5])
NTPD_MIN_INTERVAL = 64.0  # seconds: ntpd backs off for at least 1.5 x 64 s


def _bucket(times: list[float]) -> tuple[list[bool], list[bool]]:
    """Classic ntpd's leaky bucket over one address's packet times (sorted): (limited, KoD)."""
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
    return out, out


def _score(times: list[float]) -> tuple[list[bool], list[bool]]:
    """ntpsec's decaying score over one address's packet times (sorted): (limited, KoD)."""
    limited, kod = [], []
    score, last = 0.0, None
    for t in times:
        score = 1.0 / DECAY if last is None else score * math.exp(-(t - last) / DECAY) + 1.0 / DECAY
        last = t
        over = score >= RATE_LIMIT
        limited.append(over)
        kod.append(over and score <= RATE_LIMIT + KOD_LIMIT)
    return limited, kod


def limited(events: dict[str, np.ndarray], book: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Masks of requests a strict server limits, and of those it answers with KoD RATE."""
    limit = np.zeros(len(events["time"]), dtype=bool)
    kod = np.zeros(len(events["time"]), dtype=bool)
    idx = np.nonzero(book["strict"][events["server"]])[0]
    if len(idx) == 0:
        return limit, kod
    key = events["client"][idx].astype(np.int64) * (1 << 22) + events["server"][idx].astype(np.int64)
    time = events["time"][idx]
    order = np.lexsort((time, key))
    key, time, idx = key[order], time[order], idx[order]
    starts = np.concatenate(([0], np.nonzero(key[1:] != key[:-1])[0] + 1, [len(key)]))
    gap = np.diff(time, prepend=-np.inf)
    gap[starts[:-1]] = np.inf
    ntpsec = book["ntpsec"][events["server"][idx[starts[:-1]]]]
    # only addresses that ever come faster than the limiter forgives can be limited:
    # ntpsec's score stays below 1 while every gap is over 1.05 s
    fast = np.add.reduceat(gap < HEAD, starts[:-1]) > 0
    faster = np.add.reduceat(gap < 1.05 * MINIMUM, starts[:-1]) > 0
    for group in np.nonzero(np.where(ntpsec, faster, fast))[0]:
        lo, hi = starts[group], starts[group + 1]
        limits, kods = (_score if ntpsec[group] else _bucket)(time[lo:hi].tolist())
        limit[idx[lo:hi]] = limits
        kod[idx[lo:hi]] = kods
    return limit, kod


def _backed_off(events: dict[str, np.ndarray], kod: np.ndarray) -> np.ndarray:
    """Mask of requests an honouring stream would not send after a KoD it received.

    A stream walks its own requests in time order: one that falls inside the quiet
    spell after the latest KoD it *sent into* is never sent, so a KoD on a request
    that is never sent starts no spell of its own.
    """
    out = np.zeros(len(events["time"]), dtype=bool)
    honouring = events["honour"] != Honour.IGNORE
    streams = np.unique(events["stream"][kod & honouring])
    idx = np.nonzero(honouring & np.isin(events["stream"], streams))[0]
    if len(idx) == 0:
        return out
    idx = idx[np.lexsort((events["time"][idx], events["stream"][idx]))]
    interval = 2.0 ** events["poll"][idx].astype(np.float64)
    honour = events["honour"][idx]
    quiet = BACKOFF[honour] * np.where(honour == Honour.NTPD, np.maximum(interval, NTPD_MIN_INTERVAL), interval)
    drop = np.zeros(len(idx), dtype=bool)
    stream, time, got = events["stream"][idx].tolist(), events["time"][idx].tolist(), kod[idx].tolist()
    current, until = -1, -np.inf
    for i, (s, t, k, q) in enumerate(zip(stream, time, got, quiet.tolist())):
        if s != current:
            current, until = s, -np.inf
        if t < until:
            drop[i] = True
        elif k:
            until = t + q
    out[idx] = drop
    return out


def apply(events: dict[str, np.ndarray], book: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Events with KoD RATE marked, limited requests without KoD unanswered, honouring
    streams backed off; returns new columns. ``book`` is ``AddressBook.arrays()``."""
    _, kod = limited(events, book)
    events = select(events, ~_backed_off(events, kod))
    limit, kod = limited(events, book)
    reply = events["reply"].copy()
    reply[limit] = Reply.NONE
    reply[kod] = Reply.KOD_RATE
    events["reply"] = reply
    return events
