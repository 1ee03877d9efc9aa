"""Request events: one row per NTP request the simulated campus sends or receives.

The generator works on whole request schedules, not packets: every client
instance (one daemon talking to one server) becomes a *stream* of request times
built with numpy (a poll ramp, then steady polling), and every stream is appended
to an :class:`EventTable` as columns. Replies, KoD and the wire fields are derived
from these rows later (``netmon.simulate.packets``), so a week of a large campus
is a few million rows of a few dozen bytes.

Units: times are UNIX seconds (event time at the campus edge); ``poll`` is the
log2-seconds exponent the client advertises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class Kind(IntEnum):
    """Client software (or traffic source): decides the wire fields of its requests."""

    NTPD = 1  # classic ntpd / ntpsec: port 123, origin = last server transmit
    CHRONY = 2  # random source port per request, zero origin, random transmit
    TIMESYNCD = 3  # systemd-timesyncd, SNTP: random port, zero origin
    W32TIME = 4  # Windows: NTPv3 from port 123, long intervals
    SNTP = 5  # one-shot syncs (ntpdate/sntp/chronyd -q): random port, zero origin
    IOT = 6  # embedded SNTP hard-wired to one server, fixed port, no backoff
    FLOOD = 7  # a compromised host's flood: random ports, zeroed header
    MONLIST = 8  # mode 7 MON_GETLIST_1 request arriving at a campus server


class Org(IntEnum):
    """How a request's origin timestamp is filled."""

    ZERO = 0  # data-minimising clients, SNTP
    CHAIN = 1  # ntpd: the transmit timestamp of the last reply to this stream
    STALE = 2  # shared socket: the transmit timestamp of an older reply to the host
    RANDOM = 3  # garbage


class Honour(IntEnum):
    """What a client stream does after a KoD RATE."""

    IGNORE = 0  # runaways, IoT firmware, floods: carry on
    NTPD = 1  # ntpd: nothing more for 1.5 poll intervals (at least 96 s)
    CHRONY = 2  # chronyd: the next request waits 4 extra poll intervals, per instance (ntp_core.c)


class Reply(IntEnum):
    """What comes back for a request."""

    NONE = 0
    NORMAL = 1
    KOD_RATE = 2
    MONLIST = 3  # a train of mode 7 response packets


#: columns of the event table and their dtypes
COLUMNS: dict[str, str] = {
    "time": "f8",
    "client": "u4",  # address index of the requester (a campus host or an outside client)
    "server": "u4",  # address index of the server
    "sport": "u2",  # requester's source port as seen at the edge
    "kind": "u1",
    "poll": "i1",
    "org": "u1",
    "reply": "u1",
    "honour": "u1",  # Honour: how the stream backs off after a KoD
    "stream": "u4",
    "prev": "f8",  # time of the request whose reply the origin copies (NaN: none)
}


@dataclass
class EventTable:
    """Columns of request events, appended one stream at a time, then frozen by :meth:`finish`."""

    parts: dict[str, list[np.ndarray]] = field(default_factory=lambda: {name: [] for name in COLUMNS})
    streams: int = 0
    frozen: dict[str, np.ndarray] = field(default_factory=dict)

    def add(
        self,
        time: np.ndarray,
        client: int | np.ndarray,
        server: int | np.ndarray,
        kind: Kind,
        poll: int | np.ndarray,
        sport: int | np.ndarray,
        org: Org = Org.ZERO,
        reply: int | np.ndarray = Reply.NORMAL,
        honour: Honour = Honour.NTPD,
    ) -> None:
        """Append one stream of requests (scalars broadcast to its length)."""
        n = len(time)
        if n == 0:
            return
        values = {
            "time": time,
            "client": client,
            "server": server,
            "sport": sport,
            "kind": int(kind),
            "poll": poll,
            "org": int(org),
            "reply": reply,
            "honour": int(honour),
            "stream": self.streams,
            "prev": np.nan,
        }
        for name, dtype in COLUMNS.items():
            self.parts[name].append(np.broadcast_to(np.asarray(values[name], dtype=dtype), (n,)).copy())
        self.streams += 1

    def finish(self) -> dict[str, np.ndarray]:
        """Every column as one array (stream order; callers sort by time)."""
        if not self.frozen:
            self.frozen = {
                name: np.concatenate(chunks) if chunks else np.zeros(0, dtype=COLUMNS[name])
                for name, chunks in self.parts.items()
            }
            self.parts = {name: [] for name in COLUMNS}
        return self.frozen


def select(events: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of every column where ``keep`` (a mask or an index array)."""
    return {name: column[keep] for name, column in events.items()}


#: (requests, seconds between them, advertised poll) of a start-up ramp
Ramp = list[tuple[int, float, int]]

NTPD_RAMP: Ramp = [(8, 2.0, 6), (8, 64.0, 6), (8, 128.0, 7), (6, 256.0, 8), (4, 512.0, 9)]
NTPD_STEADY = 10
CHRONY_RAMP: Ramp = [(4, 2.0, 6), (4, 64.0, 6), (4, 128.0, 7), (4, 256.0, 8), (4, 512.0, 9)]
TIMESYNCD_RAMP: Ramp = [(2, 32.0, 5), (2, 64.0, 6), (2, 128.0, 7), (2, 256.0, 8), (2, 512.0, 9), (2, 1024.0, 10)]
TIMESYNCD_STEADY = 11
W32TIME_RAMP: Ramp = [(3, 2.0, 10)]
W32TIME_STEADY = 15
ONESHOT_RAMP: Ramp = [(4, 2.0, 6)]


def schedule(
    rng: np.random.Generator,
    start: float,
    end: float,
    ramp: Ramp,
    steady: int | None,
    fuzz: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Request times in [start, end) and their advertised poll: the ramp, then every 2^steady s.

    ``steady`` None stops after the ramp (a one-shot sync). Every gap is scaled by
    a uniform factor in [1 - fuzz, 1 + fuzz] (daemons randomise their poll timers).
    """
    gaps = [np.full(count, gap) for count, gap, _ in ramp]
    polls = [np.full(count, poll, dtype=np.int8) for count, _, poll in ramp]
    ramp_span = sum(count * gap for count, gap, _ in ramp)
    if steady is not None:
        count = int(max(0.0, end - start - ramp_span) / (2.0**steady * (1 - fuzz))) + 2
        gaps.append(np.full(count, 2.0**steady))
        polls.append(np.full(count, steady, dtype=np.int8))
    gap = np.concatenate(gaps) * rng.uniform(1 - fuzz, 1 + fuzz, sum(len(g) for g in gaps))
    gap[0] = 0.0
    times = start + np.cumsum(gap)
    keep = (times >= start) & (times < end)
    return times[keep], np.concatenate(polls)[keep]


def steady(rng: np.random.Generator, start: float, end: float, poll: int, fuzz: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A daemon already running at ``start``: steady polling with a random phase."""
    phase = rng.uniform(0, 2.0**poll)
    times, polls = schedule(rng, start + phase - 2.0**poll, end, [], poll, fuzz)
    keep = times >= start
    return times[keep], polls[keep]


def poisson(rng: np.random.Generator, start: float, end: float, rate: float) -> np.ndarray:
    """Times of a Poisson process of ``rate`` events per second in [start, end)."""
    count = rng.poisson(rate * max(0.0, end - start))
    return np.sort(rng.uniform(start, end, count))


def last_before(group: np.ndarray, time: np.ndarray, mark: np.ndarray) -> np.ndarray:
    """For each row, the time of the latest marked row strictly before it in its group (NaN if none).

    Works on positions in (group, time) order, so the times come back exactly:
    per-packet fields are hashes of these times.
    """
    n = len(time)
    if n == 0:
        return np.zeros(0)
    order = np.lexsort((time, group))
    g, t = group[order], time[order]
    position = np.arange(n)
    first = np.maximum.accumulate(np.where(np.concatenate(([True], g[1:] != g[:-1])), position, 0))
    marked = np.where(mark[order], position, -1)
    last = np.maximum.accumulate(np.concatenate(([-1], marked[:-1])))
    out = np.full(n, np.nan)
    out[order] = np.where(last >= first, t[np.maximum(last, 0)], np.nan)
    return out
