"""The shapes of issue 10: runaways as real daemons make them, and the look-alikes that must stay quiet.

Each shape is a case of its own (one name per shape, on hosts of its own); its
labels carry ``expect``: ``alert`` for a runaway, ``quiet`` for a host a
detector must not flag. Runaway labels give ``daemon_starts``, the start time
(UNIX seconds) of every daemon the host runs during the case, its own daemon
included, so an evaluation can say how many were running at detection.

Runaways (``alert``):

* ``chrony-runaway-1h`` ... ``chrony-runaway-5s``: one more chronyd every hour
  (cron), 10 min, 1 min or 5 s (a crash-looping unit), each ``server X iburst``:
  every request from a new random source port (chrony's default ``acquisitionport``
  opens a connected socket per request), zero origin, random transmit timestamp
  (``ntp_core.c`` hides the client's clock), iburst then poll 64 s rising to
  1024 s, and KoD RATE honoured by each instance on its own (4 extra poll
  intervals). The pile grows to ``PILE`` daemons, runs ``HOLD`` more, then the
  host is rebooted and runs one chronyd again. The hourly one talks to a classic
  ntpd pool server (``limited kod``); the faster ones to an ntpsec server with
  ``limited kod`` (KoD only between 1 and 1.5 packets/s, drops above).
* ``incident`` (``netmon.simulate.cases``): the ntpd shared-socket runaway.
* ``cold-start-20``, ``-200``, ``-4000``: a chronyd pile already running at the
  first packet (one more started every hour for weeks), still growing hourly;
  cleaned up after a day.

Look-alikes (``quiet``):

* ``nat-chrony`` / ``nat-chrony-kod``: NAT gateways of 5, 30, 100 and 300 chrony
  clients (desktops always on, laptops for the working day), to two lenient
  pool servers, or to one strict classic ntpd server whose KoD each client
  behind the gateway honours on its own; those of 30 and 300 are declared (the
  labels' meta lists them under ``gateways``), the others are not;
* ``reboot-loop``: hosts rebooting every 2, 5 and 10 minutes for a day, each
  boot a one-shot sync (4 requests) then the daemon with iburst;
* ``suspend-resume``: laptops suspended and resumed through the working day,
  chronyd bursting (iburst on going online) or timesyncd restarting at 32 s;
* ``minpoll-4``: chronyd and ntpd configured ``minpoll 4 maxpoll 4`` (16 s);
* ``timesyncd``: systemd-timesyncd as it is on the wire: one socket (one random
  port) per connection to its one server, zero origin, real transmit time, poll
  field 0 (it never fills it in), polling 32 s doubling to 2048 s;
* ``campus-server``: a busy campus NTP server answering 300-750 outside clients.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from netmon.simulate.campus import DAY, EPHEMERAL, Campus, internal_server, run_days, work_sessions
from netmon.simulate.cases import HOUR, Label, _at, _label
from netmon.simulate.events import (
    CHRONY_RAMP,
    NTPD_STEADY,
    TIMESYNCD_RAMP,
    TIMESYNCD_STEADY,
    Honour,
    Kind,
    Org,
    schedule,
    steady,
)
from netmon.simulate.world import ref_id_of

PILE = 300  # daemons a growing runaway reaches before it stops growing
HOLD = 6 * HOUR  # seconds the full pile runs before the host is rebooted
COLD_SPAN = DAY  # seconds a cold-start pile runs from the first packet before the cleanup
NTPSEC_SERVER = "203.0.113.10"
NAT_SIZES = (5, 30, 100, 300)
REBOOT_PERIODS = (120.0, 300.0, 600.0)
MINPOLL = 4


def _shape(campus: Campus, case: str, client: int, start: float, end: float, expect: str, **detail: object) -> Label:
    label = _label(campus, case, client, start, end, **detail)
    label["expect"] = expect
    return label


def ntpsec_server(campus: Campus) -> int:
    """An outside ntpsec server with ``restrict default limited kod`` (added once, no randomness)."""
    return campus.book.add(NTPSEC_SERVER, 2, ref_id_of("198.51.100.240"), 0.03, strict=True, ntpsec=True)


def classic_strict_server(campus: Campus) -> int:
    """The first strict pool server (classic ntpd, ``limited kod``): the founding incident's."""
    return next(s for s in campus.pool if campus.book.strict[s])


def _pile(campus: Campus, client: int, server: int, births: list[float], until: float) -> None:
    """One chronyd per birth time talking to ``server`` until ``until``; those born before
    the first packet are already steady at poll 1024 s."""
    rng = campus.rng
    for born in births:
        if born < campus.start:
            times, polls = steady(rng, campus.start, until, NTPD_STEADY)
        else:
            times, polls = schedule(rng, born, until, CHRONY_RAMP, NTPD_STEADY)
        campus.table.add(times, client, server, Kind.CHRONY, polls, campus.ports(Kind.CHRONY, len(times)),
                         honour=Honour.CHRONY)


def chrony_runaway(campus: Campus, pace: float, share: float) -> list[Label]:
    """One more chronyd every ``pace`` seconds from ``share`` of the run, up to ``PILE``."""
    rng = campus.rng
    name = f"chrony-runaway-{_pace_name(pace)}"
    client = campus.host("chrony")
    server = classic_strict_server(campus) if pace >= HOUR else ntpsec_server(campus)
    start = _at(campus, share, 60.0) + (17 * 60.0 if pace >= HOUR else 0.0)
    jitter = 3.0 if pace >= HOUR else 0.5
    births = [start + k * pace + float(rng.uniform(0, jitter)) for k in range(PILE) if start + k * pace < campus.end]
    end = min(campus.end, births[-1] + HOLD) if births else campus.end
    _pile(campus, client, server, births, end)
    # the host's own chronyd, running before the first packet, rebooted with the pile
    campus.lifetime(Kind.CHRONY, client, campus.servers_for(Kind.CHRONY, False), [end] if end < campus.end else [],
                    honour=Honour.CHRONY)
    return [_shape(campus, name, client, start, end, "alert", style="chrony", pace=pace, pile=PILE,
                   server=campus.book.text[server], daemon_starts=[campus.start, *births])]


def cold_start(campus: Campus, daemons: int) -> list[Label]:
    """A chronyd pile of ``daemons`` already running at the first packet, growing hourly."""
    rng = campus.rng
    client = campus.host("chrony")
    server = classic_strict_server(campus)
    start = campus.start
    end = min(campus.end, start + COLD_SPAN)
    cron = float(np.ceil(start / HOUR) * HOUR) + 17 * 60.0
    before = [cron - HOUR * (k + 1) for k in range(daemons)]
    after = [t + float(rng.uniform(0, 3.0)) for t in np.arange(cron, end, HOUR).tolist()]
    _pile(campus, client, server, before + after, end)
    if end < campus.end:  # cleaned up: rebooted, one chronyd again
        campus.daemon(Kind.CHRONY, client, campus.servers_for(Kind.CHRONY, False), end + 120.0, campus.end,
                      booted=True, honour=Honour.CHRONY)
    return [_shape(campus, f"cold-start-{daemons}", client, start, end, "alert", style="chrony",
                   daemons_before=daemons, extra_every=HOUR, server=campus.book.text[server],
                   daemon_starts=before + after)]


def _pace_name(pace: float) -> str:
    if pace >= HOUR:
        return f"{pace / HOUR:g}h"
    if pace >= 60:
        return f"{pace / 60:g}min"
    return f"{pace:g}s"


def nat_chrony(campus: Campus, kod: bool) -> list[Label]:
    """Gateways of ``NAT_SIZES`` chrony clients; with ``kod`` all use one strict server."""
    rng = campus.rng
    name = "nat-chrony-kod" if kod else "nat-chrony"
    lenient = [s for s in campus.pool if not campus.book.strict[s]]
    labels = []
    for i, size in enumerate(NAT_SIZES):
        declared = i % 2 == 1  # the campus lists half of them as gateways; the others it does not know
        gateway = campus.host("nat", clients=size, declared=declared)
        servers = [classic_strict_server(campus)] if kod else [int(s) for s in rng.choice(lenient, 2, replace=False)]
        for _ in range(size):
            if rng.random() < 0.4:  # a desktop, always on, rebooted now and then
                boots = [float(d + rng.uniform(0, DAY)) for d in run_days(campus) if rng.random() < 0.3]
                campus.lifetime(Kind.CHRONY, gateway, servers, [b for b in boots if campus.start < b < campus.end],
                                honour=Honour.CHRONY)
                continue
            for begin, until in work_sessions(campus, 0.8, 0.3):
                campus.daemon(Kind.CHRONY, gateway, servers, begin, until, booted=True, honour=Honour.CHRONY)
        labels.append(_shape(campus, name, gateway, campus.start, campus.end, "quiet", clients=size, declared=declared,
                             server_kod=kod, servers=[campus.book.text[s] for s in servers]))
    return labels


def reboot_loop(campus: Campus) -> list[Label]:
    """Hosts that reboot every ``REBOOT_PERIODS`` seconds for a day: a one-shot sync, then iburst."""
    rng = campus.rng
    labels = []
    for i, period in enumerate(REBOOT_PERIODS):
        kind = Kind.NTPD if i == 1 else Kind.CHRONY
        honour = Honour.NTPD if kind == Kind.NTPD else Honour.CHRONY
        client = campus.host(kind.name.lower())
        servers = campus.servers_for(kind, False)
        start = _at(campus, 0.35 + 0.05 * i, 60.0)
        end = min(campus.end, start + DAY)
        boots = start + np.cumsum(rng.uniform(0.8, 1.2, int((end - start) / (0.8 * period)) + 1) * period)
        boots = [start, *boots[boots < end].tolist()]
        campus.lifetime(kind, client, servers, [], honour=honour, until=start)
        edges = [*boots, end]
        for boot, down in zip(edges[:-1], edges[1:]):
            up = boot + float(rng.uniform(20, 40))  # firmware and kernel before the network is up
            campus.oneshot(client, servers[0], up)
            campus.daemon(kind, client, servers, up + 10.0, down, booted=True, honour=honour)
        if end < campus.end:
            campus.daemon(kind, client, servers, end + 30.0, campus.end, booted=True, honour=honour)
        labels.append(_shape(campus, "reboot-loop", client, start, end, "quiet", period=period, boots=len(boots),
                             client_kind=kind.name.lower()))
    return labels


def _awake(campus: Campus) -> list[tuple[float, float]]:
    """A laptop's awake spells: working days, 10-90 min up, 5-60 min suspended."""
    rng = campus.rng
    spells = []
    for begin, until in work_sessions(campus, 0.9, 0.2):
        t = begin
        while t < until:
            up = min(until, t + float(rng.uniform(600, 5400)))
            spells.append((t, up))
            t = up + float(rng.uniform(300, 3600))
    return spells


def timesyncd_daemon(campus: Campus, client: int, server: int, begin: float, until: float) -> None:
    """systemd-timesyncd from ``begin``: one socket (port) for the connection, poll field 0."""
    times, _ = schedule(campus.rng, begin, until, TIMESYNCD_RAMP, TIMESYNCD_STEADY)
    campus.table.add(times, client, server, Kind.TIMESYNCD, 0, int(campus.rng.integers(*EPHEMERAL)))


def suspend_resume(campus: Campus) -> list[Label]:
    """Laptops that suspend and resume all day: two with chronyd, one with timesyncd."""
    labels = []
    for kind in (Kind.CHRONY, Kind.CHRONY, Kind.TIMESYNCD):
        client = campus.host(kind.name.lower(), laptop=True)
        servers = campus.servers_for(kind, False)
        spells = _awake(campus)
        for begin, until in spells:
            if kind == Kind.TIMESYNCD:
                timesyncd_daemon(campus, client, servers[0], begin, until)
            else:
                campus.daemon(kind, client, servers, begin, until, booted=True, honour=Honour.CHRONY)
        labels.append(_shape(campus, "suspend-resume", client, campus.start, campus.end, "quiet",
                             client_kind=kind.name.lower(), resumes=len(spells)))
    return labels


def minpoll4(campus: Campus) -> list[Label]:
    """``minpoll 4 maxpoll 4`` clients: a chronyd and an ntpd, two servers each, every 16 s."""
    labels = []
    for kind in (Kind.CHRONY, Kind.NTPD):
        client = campus.host(kind.name.lower(), minpoll=MINPOLL)
        servers = campus.servers_for(kind, False)[:2]
        for server in servers:
            times, polls = steady(campus.rng, campus.start, campus.end, MINPOLL)
            campus.table.add(times, client, server, kind, polls, campus.ports(kind, len(times)),
                             honour=Honour.CHRONY if kind == Kind.CHRONY else Honour.NTPD,
                             org=Org.CHAIN if kind == Kind.NTPD else Org.ZERO)
        labels.append(_shape(campus, "minpoll-4", client, campus.start, campus.end, "quiet", client_kind=kind.name.lower()))
    return labels


def timesyncd(campus: Campus) -> list[Label]:
    """Three systemd-timesyncd hosts, each rebooted once or twice (a new port per boot)."""
    rng = campus.rng
    labels = []
    for _ in range(3):
        client = campus.host("timesyncd")
        server = int(rng.choice(campus.timesyncd))
        boots = sorted(float(b) for b in rng.uniform(campus.start, campus.end, int(rng.integers(1, 3))))
        edges = [campus.start, *boots, campus.end]
        for i, (begin, until) in enumerate(zip(edges[:-1], edges[1:])):
            timesyncd_daemon(campus, client, server, begin + (float(rng.uniform(30, 90)) if i else 0.0), until)
        labels.append(_shape(campus, "timesyncd", client, campus.start, campus.end, "quiet", reboots=boots))
    return labels


def campus_server(campus: Campus) -> list[Label]:
    """A busy campus NTP server: 300-750 outside clients, three upstreams."""
    server = internal_server(campus, share=3.0)
    return [_shape(campus, "campus-server", server, campus.start, campus.end, "quiet")]


SHAPES: dict[str, Callable[[Campus], list[Label]]] = {
    "chrony-runaway-1h": partial(chrony_runaway, pace=HOUR, share=0.2),
    "chrony-runaway-10min": partial(chrony_runaway, pace=600.0, share=0.3),
    "chrony-runaway-1min": partial(chrony_runaway, pace=60.0, share=0.4),
    "chrony-runaway-5s": partial(chrony_runaway, pace=5.0, share=0.5),
    "cold-start-20": partial(cold_start, daemons=20),
    "cold-start-200": partial(cold_start, daemons=200),
    "cold-start-4000": partial(cold_start, daemons=4000),
    "nat-chrony": partial(nat_chrony, kod=False),
    "nat-chrony-kod": partial(nat_chrony, kod=True),
    "reboot-loop": reboot_loop,
    "suspend-resume": suspend_resume,
    "minpoll-4": minpoll4,
    "timesyncd": timesyncd,
    "campus-server": campus_server,
}
