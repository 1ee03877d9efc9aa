"""Observation rows built directly with numpy: NTP conversations with known answers.

Shared by the aggregate, rules and store tests. Every helper appends to a
:class:`Traffic` and returns nothing; ``Traffic.rows()`` gives a time-sorted
OBS_DTYPE array. Timestamps on the wire are distinct counters, so an origin that
copies one is recognisable.
"""

from __future__ import annotations

import itertools

import numpy as np

from netmon.batch import OBS_DTYPE, addr_halves
from netmon.config import Aggregate, Campus

KOD = {"RATE": 0x52415445, "DENY": 0x44454E59, "RSTR": 0x52535452}
#: IP bytes of a 48-byte NTP packet over UDP: IPv4 and IPv6 headers
NTP_BYTES = {4: 20 + 8 + 48, 6: 40 + 8 + 48}


def campus(*internal: str, **groups: list[str]) -> Campus:
    return Campus(internal=list(internal) or ["10.0.0.0/8", "2001:db8::/32"], groups=groups)


def settings(interval: float = 60.0, lateness: float = 2.0, kod_holdoff: float = 3600.0) -> Aggregate:
    return Aggregate(interval=interval, lateness=lateness, kod_holdoff=kod_holdoff)


class Traffic:
    """A growing list of observation rows."""

    def __init__(self, seed: int = 1) -> None:
        self.items: list[dict] = []
        self.stamps = itertools.count(0x1000_0000_0000)
        self.rng = np.random.default_rng(seed)

    def stamp(self) -> int:
        return next(self.stamps) << 8

    def packet(self, time: float, src: str, dst: str, sport: int, dport: int, **fields) -> dict:
        src_hi, src_lo = addr_halves(src)
        dst_hi, dst_lo = addr_halves(dst)
        family = 6 if ":" in src else 4
        row = dict(time=time, src_hi=src_hi, src_lo=src_lo, dst_hi=dst_hi, dst_lo=dst_lo, sport=sport,
                   dport=dport, packets=1.0, bytes=NTP_BYTES[family], ntp=1, version=4, stratum=2, poll=6)
        row.update(fields)
        self.items.append(row)
        return row

    def request(self, time: float, host: str, server: str, port: int = 123, org: int = 0, poll: int = 6,
                mode: int = 3) -> int:
        """A client request; returns its transmit timestamp."""
        xmt = self.stamp()
        self.packet(time, host, server, port, 123, mode=mode, poll=poll, org_ts=org, xmt_ts=xmt, stratum=0)
        return xmt

    def reply(self, time: float, server: str, host: str, port: int = 123, org: int = 0, kod: str | None = None,
              poll: int = 6) -> int:
        """A server reply (or KoD with ``kod`` = RATE/DENY/RSTR); returns its transmit timestamp."""
        xmt = self.stamp()
        fields = dict(mode=4, poll=poll, org_ts=org, rec_ts=xmt - 1, xmt_ts=xmt)
        if kod:
            fields.update(leap=3, stratum=0, ref_id=KOD[kod])
        self.packet(time, server, host, 123, port, **fields)
        return xmt

    def ntpd(self, host: str, server: str, start: float, end: float, poll: int = 6, port: int = 123,
             origin: str = "chain", kod: str | None = None, honour_kod: bool = True) -> None:
        """One client polling every 2^poll s; ``origin`` chain (ntpd), zero (chrony) or random."""
        last_xmt = 0
        time = start
        while time < end:
            org = {"chain": last_xmt, "zero": 0, "random": int(self.rng.integers(1, 2**62))}[origin]
            sent = self.request(time, host, server, port, org=org, poll=poll)
            got_kod = kod is not None
            last_xmt = self.reply(time + 0.02, server, host, port, org=sent, kod=kod, poll=poll)
            time += 2.0**poll * (4 if got_kod and honour_kod else 1)

    def iburst(self, host: str, server: str, start: float, port: int = 123, count: int = 8, poll: int = 6) -> float:
        """ntpd's boot burst: ``count`` chained requests 2 s apart; returns when it ends."""
        last_xmt = 0
        for i in range(count):
            sent = self.request(start + 2 * i, host, server, port, org=last_xmt, poll=poll)
            last_xmt = self.reply(start + 2 * i + 0.02, server, host, port, org=sent, poll=poll)
        return start + 2 * count

    def runaway(self, host: str, server: str, start: float, end: float, instances: int, poll: int = 6,
                kod_from: float | None = None) -> None:
        """``instances`` ntpd sharing port 123: each polls on its own phase, origins random,
        replies land on whichever instance; KoD RATE from ``kod_from`` on, ignored."""
        for i in range(instances):
            phase = float(self.rng.uniform(0, 2.0**poll))
            time = start + phase
            while time < end:
                sent = self.request(time, host, server, 123, org=int(self.rng.integers(1, 2**62)), poll=poll)
                kod = "RATE" if kod_from is not None and time >= kod_from else None
                self.reply(time + 0.02, server, host, 123, org=sent, kod=kod, poll=poll)
                time += 2.0 ** (poll or 6)  # poll 0: not advertised, every 64 s

    def chrony(self, host: str, server: str, start: float, end: float, poll: int = 6, iburst: bool = True,
               kod_after: float | None = None) -> None:
        """One chronyd as it really sends: a new random source port for every request,
        zero origin, 4 requests 2 s apart at start (iburst); ``poll`` 0 sends no poll and
        polls every 64 s (as ntpsec does); on KoD RATE (from
        ``kod_after`` on) it backs off on its own (doubles its interval and poll)."""
        time = start
        burst = 4 if iburst else 0
        while time < end:
            port = int(self.rng.integers(32768, 61000))
            self.request(time, host, server, port, org=0, poll=poll)
            kod = "RATE" if kod_after is not None and time >= kod_after else None
            self.reply(time + 0.02, server, host, port, kod=kod, poll=poll)
            if kod:
                poll += 1
            if burst > 1:
                burst -= 1
                time += 2.0
            else:
                burst = 0
                time += 2.0 ** (poll or 6) * float(self.rng.uniform(0.9, 1.1))  # poll 0: not advertised, 64 s

    def flow(self, time: float, src: str, dst: str, sport: int, dport: int, packets: float, size: float) -> None:
        """A flow record: counts only, no NTP header."""
        self.packet(time, src, dst, sport, dport, ntp=0, flows=1, packets=packets, bytes=size, version=0,
                    stratum=0, poll=0)

    def rows(self) -> np.ndarray:
        out = np.zeros(len(self.items), dtype=OBS_DTYPE)
        for i, item in enumerate(self.items):
            for key, value in item.items():
                out[i][key] = value
        return out[np.argsort(out["time"], kind="stable")]


def by_host(intervals_list, host: str) -> list[dict[str, float]]:
    """One feature dict per interval for ``host`` (with start, group, role)."""
    found = []
    for intervals in intervals_list:
        hit = np.flatnonzero(intervals.host == host)
        for i in hit:
            row = {name: float(col[i]) for name, col in intervals.features.items()}
            row.update(start=intervals.start, group=str(intervals.group[i]), role=str(intervals.role[i]))
            found.append(row)
    return found
