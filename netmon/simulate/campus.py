"""The normal campus: hosts that behave like the real NTP clients and servers they imitate.

Host kinds (share of ``--hosts``, the rest is a DHCP pool for laptops):

* ``ntpd`` (25 %): Linux servers, 4 pool servers from port 123, poll 64 -> 1024 s;
* ``chrony`` (20 %, some on IPv6): desktops, 4 pool servers, a random port per request;
* ``timesyncd`` (12 %): one distribution server, poll 32 -> 2048 s;
* ``w32time`` (15 %): Windows desktops, NTPv3 from port 123, a sync at boot then every
  32768 s; half of them are switched off at night and boot every morning;
* ``lab`` (5 %): machines rebooted every night, a one-shot sync at boot (ntpdate
  style), then ntpd with iburst;
* ``server``: busy campus NTP servers answering up to a few hundred outside clients
  (fewer on a small campus), and polling their own upstreams;
* ``nat`` and ``vpn``: one address for 20-60 clients each behaving (NAT clients
  reboot now and then, VPN clients connect for the working day); the site's DHCP
  names two servers (one strict) that all but the Windows clients use, so the
  gateway draws KoD RATE when two clients' requests come within a second, and
  the client that got it honours it;
* ``dhcp``: addresses handed to laptops that come and go; one address serves
  different laptops (different client software) on different days.

About a third of ntpd/chrony/timesyncd hosts reboot once during the run (iburst
again). Outside servers come from documentation ranges; every third pool
server is strict (``limited kod``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netmon.simulate.events import (
    CHRONY_RAMP,
    NTPD_RAMP,
    NTPD_STEADY,
    ONESHOT_RAMP,
    TIMESYNCD_RAMP,
    TIMESYNCD_STEADY,
    W32TIME_RAMP,
    W32TIME_STEADY,
    EventTable,
    Honour,
    Kind,
    Org,
    schedule,
    steady,
)
from netmon.simulate.world import GPS, PPS, AddressBook, Allocator, ref_id_of

DAY = 86400.0
EPHEMERAL = (32768, 61000)

#: kind -> (ramp at boot, steady poll exponent)
DAEMONS = {
    Kind.NTPD: (NTPD_RAMP, NTPD_STEADY),
    Kind.CHRONY: (CHRONY_RAMP, NTPD_STEADY),
    Kind.TIMESYNCD: (TIMESYNCD_RAMP, TIMESYNCD_STEADY),
    Kind.W32TIME: (W32TIME_RAMP, W32TIME_STEADY),
}
FIXED_PORT = {Kind.NTPD, Kind.W32TIME}


@dataclass
class Campus:
    """Builder state shared by the normal campus and the injected cases."""

    rng: np.random.Generator
    start: float
    end: float
    book: AddressBook
    table: EventTable
    v4: Allocator
    v6: Allocator
    outside_clients: Allocator
    hosts: dict[str, dict] = field(default_factory=dict)
    pool: list[int] = field(default_factory=list)
    pool6: list[int] = field(default_factory=list)
    timesyncd: list[int] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)

    def host(self, kind: str, v6: bool = False, **detail: object) -> int:
        """A new campus address of ``kind``, recorded for the labels."""
        text = (self.v6 if v6 else self.v4).take()
        self.hosts[text] = {"kind": kind, **detail}
        return self.book.add(text, stratum=2, rtt=0.0002)

    def servers_for(self, kind: Kind, v6: bool) -> list[int]:
        """The servers a client of ``kind`` is configured with."""
        if kind == Kind.TIMESYNCD:
            return [int(self.rng.choice(self.timesyncd))]
        if kind == Kind.W32TIME:
            return [int(self.rng.choice(self.windows))]
        pool = self.pool6 if v6 else self.pool
        return [int(s) for s in self.rng.choice(pool, size=min(4, len(pool)), replace=False)]

    def ports(self, kind: Kind, n: int, fixed: int = 123) -> np.ndarray | int:
        """Source ports as seen at the edge: fixed for ntpd/w32time, random per request otherwise."""
        if kind in FIXED_PORT:
            return fixed
        return self.rng.integers(*EPHEMERAL, size=n)

    def daemon(
        self,
        kind: Kind,
        client: int,
        servers: list[int],
        begin: float,
        until: float,
        booted: bool,
        port: int = 123,
        honour: Honour = Honour.NTPD,
    ) -> None:
        """One client daemon from ``begin`` to ``until``: a boot ramp, or already steady."""
        ramp, poll = DAEMONS[kind]
        org = Org.CHAIN if kind == Kind.NTPD else Org.ZERO
        for server in servers:
            offset = float(self.rng.uniform(0, 0.5)) if booted else 0.0
            if booted:
                times, polls = schedule(self.rng, begin + offset, until, ramp, poll)
            else:
                times, polls = steady(self.rng, begin, until, poll)
            self.table.add(times, client, server, kind, polls, self.ports(kind, len(times), port), org, honour=honour)

    def oneshot(self, client: int, server: int, at: float) -> None:
        """A boot-time one-shot sync (ntpdate/sntp/chronyd -q): 4 quick requests, then exit."""
        times, polls = schedule(self.rng, at, self.end, ONESHOT_RAMP, None)
        self.table.add(times, client, server, Kind.SNTP, polls, self.ports(Kind.SNTP, len(times)))

    def lifetime(self, kind: Kind, client: int, servers: list[int], boots: list[float], port: int = 123,
                 honour: Honour = Honour.NTPD, until: float | None = None) -> None:
        """A host running from before the start (to ``until``, default the end), rebooting
        at ``boots`` (60-180 s down each)."""
        edges = [self.start, *sorted(boots), self.end if until is None else until]
        for i in range(len(edges) - 1):
            begin = edges[i] + (float(self.rng.uniform(60, 180)) if i else 0.0)
            self.daemon(kind, client, servers, begin, edges[i + 1], booted=i > 0, port=port, honour=honour)


def outside_world(campus: Campus) -> None:
    """Pool, distribution and vendor servers outside campus."""
    book, rng = campus.book, campus.rng
    for i in range(24):
        stratum = 1 if i % 4 == 0 else 2
        ref = GPS if stratum == 1 else ref_id_of(f"198.51.100.{200 + i}")
        campus.pool.append(book.add(f"192.0.2.{10 + i}", stratum, ref, float(rng.uniform(0.005, 0.12)), strict=i % 3 == 0))
    for i in range(6):
        campus.pool6.append(book.add(f"2001:db8:ff::{16 + i:x}", 2, ref_id_of(f"198.51.100.{230 + i}"), float(rng.uniform(0.01, 0.1)), strict=i % 3 == 0))
    campus.timesyncd = [book.add(f"198.51.100.{20 + i}", 2, PPS, 0.03) for i in range(2)]
    campus.windows = [book.add(f"198.51.100.{10 + i}", 3, ref_id_of("198.51.100.100"), 0.05) for i in range(2)]


def _boots(campus: Campus, share: float) -> list[float]:
    if campus.rng.random() < share:
        return [float(campus.rng.uniform(campus.start, campus.end))]
    return []


def run_days(campus: Campus) -> np.ndarray:
    first = np.floor(campus.start / DAY) * DAY
    return np.arange(first, campus.end, DAY)


def static_hosts(campus: Campus, kind: Kind, count: int, v6_share: float = 0.0) -> None:
    """Always-on hosts of one client kind; a third reboot once."""
    name = kind.name.lower()
    for _ in range(count):
        v6 = campus.rng.random() < v6_share
        boots = _boots(campus, 0.33)
        client = campus.host(name, v6=v6, reboots=boots)
        campus.lifetime(kind, client, campus.servers_for(kind, v6), boots)


def windows_desktops(campus: Campus, count: int) -> None:
    """w32time desktops; half are switched off at night and boot each morning."""
    for _ in range(count):
        if campus.rng.random() < 0.5:
            campus.lifetime(Kind.W32TIME, campus.host("w32time"), campus.servers_for(Kind.W32TIME, False), [])
            continue
        client = campus.host("w32time", nightly_off=True)
        servers = campus.servers_for(Kind.W32TIME, False)
        for day in run_days(campus):
            on = day + 7 * 3600 + float(campus.rng.uniform(0, 7200))
            off = day + 18 * 3600 + float(campus.rng.uniform(0, 7200))
            campus.daemon(Kind.W32TIME, client, servers, max(on, campus.start), min(off, campus.end), booted=on >= campus.start)


def lab_machines(campus: Campus, count: int) -> None:
    """Rebooted every night at about 03:00: a one-shot sync at boot, then ntpd with iburst."""
    for _ in range(count):
        client = campus.host("lab")
        servers = campus.servers_for(Kind.NTPD, False)
        boots = [d + 3 * 3600 + float(campus.rng.uniform(0, 1200)) for d in run_days(campus)]
        boots = [b for b in boots if campus.start < b < campus.end]
        campus.lifetime(Kind.NTPD, client, servers, boots)
        for boot in boots:
            campus.oneshot(client, servers[0], boot + 30.0)


def internal_server(campus: Campus, share: float = 1.0) -> int:
    """A busy campus NTP server: ``share`` of 100-250 outside clients query it; it polls three upstreams."""
    rng = campus.rng
    address = campus.v4.take()
    campus.hosts[address] = {"kind": "server"}
    upstream = [int(s) for s in rng.choice(campus.pool, 3, replace=False)]
    server = campus.book.add(address, 2, ref_id_of(campus.book.text[upstream[0]]), 0.0002)
    campus.daemon(Kind.NTPD, server, upstream, campus.start, campus.end, booted=False)
    for _ in range(max(1, int(rng.integers(100, 250) * share))):
        client = campus.book.add(campus.outside_clients.take())
        kind_ = Kind.NTPD if rng.random() < 0.4 else Kind.CHRONY
        times, polls = steady(rng, campus.start, campus.end, int(rng.integers(8, 11)))
        campus.table.add(times, client, server, kind_, polls, campus.ports(kind_, len(times)), Org.CHAIN if kind_ == Kind.NTPD else Org.ZERO)
    return server


CLIENT_MIX = ([Kind.CHRONY, Kind.TIMESYNCD, Kind.W32TIME, Kind.NTPD], [0.35, 0.25, 0.25, 0.15])


def _client_kind(campus: Campus) -> Kind:
    return Kind(int(campus.rng.choice(CLIENT_MIX[0], p=CLIENT_MIX[1])))


def nat_gateway(campus: Campus, vpn: bool) -> None:
    """One address for 20-60 clients, each with its own translated port and schedule."""
    rng = campus.rng
    gateway = campus.host("vpn" if vpn else "nat")
    strict = [s for s in campus.pool if campus.book.strict[s]]
    lenient = [s for s in campus.pool if not campus.book.strict[s]]
    site = [int(rng.choice(strict)), int(rng.choice(lenient))]
    clients = int(rng.integers(20, 61))
    # the gateway maps each client to an outside port of its own, never shared
    ports = rng.choice(np.arange(*EPHEMERAL), size=clients, replace=False)
    for port in ports.tolist():
        kind = _client_kind(campus)
        servers = campus.servers_for(kind, False) if kind == Kind.W32TIME else site
        if not vpn:
            boots = [float(d + rng.uniform(0, DAY)) for d in run_days(campus) if rng.random() < 0.3]
            campus.lifetime(kind, gateway, servers, [b for b in boots if campus.start < b < campus.end], port=port)
            continue
        for begin, until in work_sessions(campus, 0.7, 0.3):
            campus.daemon(kind, gateway, servers, begin, until, booted=True, port=port)


def work_sessions(campus: Campus, weekday: float, weekend: float) -> list[tuple[float, float]]:
    """Working-day sessions of a roaming client inside the run."""
    out = []
    for day in run_days(campus):
        share = weekend if int(day // DAY + 3) % 7 >= 5 else weekday
        if campus.rng.random() >= share:
            continue
        begin = day + 8 * 3600 + float(campus.rng.uniform(0, 7200))
        until = day + 16 * 3600 + float(campus.rng.uniform(0, 3 * 3600))
        if until > campus.start and begin < campus.end:
            out.append((max(begin, campus.start), min(until, campus.end)))
    return out


def dhcp_laptops(campus: Campus, addresses: int) -> None:
    """Laptops that come and go, each day leasing a free address from one shared pool."""
    if addresses <= 0:
        return
    rng = campus.rng
    pool = [campus.host("dhcp") for _ in range(addresses)]
    laptops = int(addresses * 1.3)
    kinds = [_client_kind(campus) for _ in range(laptops)]
    servers = [campus.servers_for(k, False) for k in kinds]
    for day in run_days(campus):
        weekend = int(day // DAY + 3) % 7 >= 5
        present = np.nonzero(rng.random(laptops) < (0.25 if weekend else 0.75))[0]
        rng.shuffle(present)
        for laptop, address in zip(present, rng.permutation(len(pool))):
            begin = day + 8 * 3600 + float(rng.uniform(0, 7200))
            until = day + 16 * 3600 + float(rng.uniform(0, 3 * 3600))
            if until <= campus.start or begin >= campus.end:
                continue
            campus.daemon(kinds[laptop], pool[address], servers[laptop], max(begin, campus.start), min(until, campus.end), booted=begin >= campus.start)


def populate(campus: Campus, hosts: int) -> None:
    """``hosts`` campus addresses of every normal kind."""
    servers = max(1, round(hosts / 600))
    gateways = max(1, round(hosts / 150))
    counts = {
        "ntpd": round(hosts * 0.25),
        "chrony": round(hosts * 0.20),
        "timesyncd": round(hosts * 0.12),
        "w32time": round(hosts * 0.15),
        "lab": round(hosts * 0.05),
    }
    static_hosts(campus, Kind.NTPD, counts["ntpd"])
    static_hosts(campus, Kind.CHRONY, counts["chrony"], v6_share=0.25)
    static_hosts(campus, Kind.TIMESYNCD, counts["timesyncd"])
    windows_desktops(campus, counts["w32time"])
    lab_machines(campus, counts["lab"])
    for _ in range(servers):
        internal_server(campus, share=min(1.0, max(0.05, hosts / 1000)))
    for i in range(gateways):
        nat_gateway(campus, vpn=i % 3 == 2)
    dhcp_laptops(campus, hosts - sum(counts.values()) - servers - gateways)
