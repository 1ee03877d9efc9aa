"""Injected anomalies, each on hosts of its own, each returning its labels.

A label is ``{"case", "host", "start", "end", "detail"}`` with times in UNIX
seconds (event time): ``start`` is when the anomaly begins (the first extra
daemon, the first flood packet), ``end`` when it stops (or the end of the run).
Case hosts behave normally before ``start``, so a detector has to notice the change.

* ``incident``: the founding incident. An hourly cron job starts one more ntpd; all
  share port 123 and one socket, so their origins are stale or garbage, the KoD
  RATE the strict pool server sends goes to whichever instance reads it, and none
  backs off; each instance stays at poll 6 (64 s) because it never syncs.
* ``flood``: a compromised desktop sends 50 requests/s to one outside server for 30 min.
* ``reflector``: a campus NTP server answers spoofed mode 7 MON_GETLIST_1 requests
  (1/s from three victims) with trains of 30 large responses for 45 min.
* ``iot``: ten devices installed at ``start`` query one hard-wired outside server
  every 5-30 s from a fixed port, forever (the University of Wisconsin case).
* ``unsanctioned``: a chrony host is reconfigured to one unknown outside server.
* ``creep``: a host's extra SNTP queries double in rate every day (from one per 30 min).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from netmon.simulate.campus import DAY, EPHEMERAL, Campus, internal_server
from netmon.simulate.events import NTPD_RAMP, Honour, Kind, Org, Reply, poisson, schedule, steady
from netmon.simulate.world import ref_id_of

HOUR = 3600.0
Label = dict


def _label(campus: Campus, case: str, client: int, start: float, end: float, **detail: object) -> Label:
    host = campus.book.text[client]
    campus.hosts[host]["case"] = case
    return {"case": case, "host": host, "start": float(start), "end": float(end), "detail": detail}


def _at(campus: Campus, share: float, align: float = 60.0) -> float:
    """A start time ``share`` of the way through the run, on a whole ``align`` seconds."""
    t = campus.start + share * (campus.end - campus.start)
    return float(np.floor(t / align) * align)


def incident(campus: Campus, daemons_before: int = 1) -> list[Label]:
    """One more ntpd every hour, all on port 123 to one strict server, KoD ignored."""
    rng = campus.rng
    client = campus.host("ntpd")
    server = next(s for s in campus.pool if campus.book.strict[s])
    start = _at(campus, 0.25, HOUR) + 17 * 60.0  # cron at :17
    end = campus.end
    if daemons_before == 1:
        times, polls = steady(rng, campus.start, start, 10)
        campus.table.add(times, client, server, Kind.NTPD, polls, 123, Org.CHAIN)
    starts = [start - HOUR * (k + 1) for k in range(daemons_before)] + list(np.arange(start, end, HOUR))
    for born in starts:
        if born < start:  # already running when the (observed) incident starts: steady at poll 6
            times, polls = steady(rng, start, end, 6)
        else:
            times, polls = schedule(rng, born + float(rng.uniform(0, 3)), end, NTPD_RAMP[:1], 6)
        campus.table.add(times, client, server, Kind.NTPD, polls, 123, Org.STALE, honour=Honour.IGNORE)
    return [_label(campus, "incident", client, start, end, daemons_before=daemons_before, extra_every=HOUR,
                   server=campus.book.text[server], daemon_starts=sorted(float(t) for t in starts))]


def flood(campus: Campus) -> list[Label]:
    """A desktop, normal until it floods one outside server with 50 requests/s for 30 min."""
    rng = campus.rng
    client = campus.host("chrony")
    campus.lifetime(Kind.CHRONY, client, campus.servers_for(Kind.CHRONY, False), [])
    victim = campus.book.add("203.0.113.99", 2, ref_id_of("198.51.100.250"), 0.04, answer=0.05)
    start = _at(campus, 0.4)
    end = min(start + 1800.0, campus.end)
    times = poisson(rng, start, end, 50.0)
    campus.table.add(times, client, victim, Kind.FLOOD, 0, rng.integers(1024, 65535, len(times)), honour=Honour.IGNORE)
    return [_label(campus, "flood", client, start, end, rate=50.0, server="203.0.113.99")]


def reflector(campus: Campus) -> list[Label]:
    """A busy campus server abused as a monlist reflector for 45 min."""
    rng = campus.rng
    server = internal_server(campus)
    start = _at(campus, 0.55)
    end = min(start + 2700.0, campus.end)
    for v in range(3):
        victim = campus.book.add(f"198.18.200.{10 + v}", rtt=0.05)
        times = poisson(rng, start, end, 1.0 / 3)
        campus.table.add(times, victim, server, Kind.MONLIST, 0, int(rng.integers(1024, 65535)), reply=Reply.MONLIST, honour=Honour.IGNORE)
    return [_label(campus, "reflector", server, start, end, requests_per_s=1.0)]


def iot(campus: Campus, devices: int = 10) -> list[Label]:
    """Devices installed at ``start`` that poll one hard-wired server every 5-30 s."""
    rng = campus.rng
    server = campus.book.add("192.0.2.200", 1, ref_id_of("198.51.100.251"), 0.06, answer=0.7)
    start = _at(campus, 0.3)
    labels = []
    for _ in range(devices):
        client = campus.host("iot")
        gap = float(rng.uniform(5, 30))
        begin = start + float(rng.uniform(0, 600))
        poll = 0 if rng.random() < 0.5 else 6
        count = int((campus.end - begin) / gap) + 1
        times = begin + np.arange(count) * gap + rng.uniform(-0.05, 0.05, count) * gap
        times = times[times < campus.end]
        campus.table.add(times, client, server, Kind.IOT, poll, int(rng.integers(1024, 65535)), honour=Honour.IGNORE)
        labels.append(_label(campus, "iot", client, begin, campus.end, interval=gap, server="192.0.2.200"))
    return labels


def unsanctioned(campus: Campus) -> list[Label]:
    """A chrony host moved to one unknown outside server (a fresh start, iburst)."""
    client = campus.host("chrony")
    rogue = campus.book.add("203.0.113.66", 3, ref_id_of("203.0.113.1"), 0.09)
    start = _at(campus, 0.5)
    campus.daemon(Kind.CHRONY, client, campus.servers_for(Kind.CHRONY, False), campus.start, start, booted=False)
    campus.daemon(Kind.CHRONY, client, [rogue], start + 5.0, campus.end, booted=True)
    return [_label(campus, "unsanctioned", client, start, campus.end, server="203.0.113.66")]


def creep(campus: Campus, doubling: float = DAY) -> list[Label]:
    """A normal ntpd host whose extra SNTP queries double in rate every ``doubling`` seconds."""
    rng = campus.rng
    client = campus.host("ntpd")
    servers = campus.servers_for(Kind.NTPD, False)
    campus.lifetime(Kind.NTPD, client, servers, [])
    start = _at(campus, 0.15)
    base = 1.0 / 1800
    peak = base * 2.0 ** ((campus.end - start) / doubling)
    times = poisson(rng, start, campus.end, peak)
    keep = rng.random(len(times)) < base * 2.0 ** ((times - start) / doubling) / peak
    times = times[keep]
    campus.table.add(times, client, servers[0], Kind.SNTP, 6, rng.integers(*EPHEMERAL, len(times)), honour=Honour.IGNORE)
    return [_label(campus, "creep", client, start, campus.end, base_rate=base, doubling=doubling)]


CASES: dict[str, Callable[..., list[Label]]] = {
    "incident": incident,
    "flood": flood,
    "reflector": reflector,
    "iot": iot,
    "unsanctioned": unsanctioned,
    "creep": creep,
}
