"""Synthetic HostIntervals for model tests, built directly with numpy.

A fleet is a set of polling daemons, each owned by a host, with its own period,
phase and start/stop time; one interval's rows are the hosts that sent at least
one request in it, with the features the aggregator would compute for such
clean clients (one server per daemon, ntpd sharing port 123).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netmon.batch import FEATURES, HostIntervals

REQUEST_BYTES = 76.0


@dataclass
class Fleet:
    hosts: list[str]
    groups: list[str]
    owner: list[int] = field(default_factory=list)
    period: list[float] = field(default_factory=list)
    phase: list[float] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)
    servers: list[float] = field(default_factory=list)
    socket: list[int] = field(default_factory=list)
    stale: list[bool] = field(default_factory=list)
    flow: bool = False

    @classmethod
    def clients(cls, n: int, group: str = "clients", seed: int = 1, periods=(64.0, 128.0, 256.0, 1024.0)) -> "Fleet":
        """``n`` hosts, each with one daemon at a random period and phase."""
        rng = np.random.default_rng(seed)
        fleet = cls(hosts=[f"10.0.{i // 250}.{i % 250 + 1}" for i in range(n)], groups=[group] * n)
        for i in range(n):
            p = float(rng.choice(periods))
            fleet.add(i, p, float(rng.uniform(0, p)))
        return fleet

    def add(
        self,
        host: int,
        period: float,
        phase: float,
        start: float = -np.inf,
        stop: float = np.inf,
        servers: float = 1.0,
        socket: int | None = None,
        stale: bool = False,
    ) -> None:
        """One more daemon on ``host``, polling every ``period`` s from ``start`` to ``stop``.

        Daemons given the same ``socket`` share one (port 123 to one server), so
        the aggregator sees their requests as one socket polling faster than
        advertised; ``stale`` daemons send origins that match nothing.
        """
        self.socket.append(len(self.owner) if socket is None else socket)
        self.stale.append(stale)
        self.owner.append(host)
        self.period.append(period)
        self.phase.append(phase)
        self.start.append(start)
        self.stop.append(stop)
        self.servers.append(servers)

    def add_host(self, name: str, group: str = "clients") -> int:
        self.hosts.append(name)
        self.groups.append(group)
        return len(self.hosts) - 1

    def interval(self, t0: float, length: float = 60.0) -> HostIntervals:
        """The rows of interval [t0, t0 + length)."""
        owner = np.array(self.owner)
        period = np.array(self.period)
        phase = np.array(self.phase)
        lo = np.maximum(t0, np.array(self.start))
        hi = np.minimum(t0 + length, np.array(self.stop))
        events = np.where(hi > lo, np.floor((hi - phase) / period) - np.floor((lo - phase) / period), 0.0)
        events *= np.array(self.servers)
        n = len(self.hosts)
        requests = np.bincount(owner, weights=events, minlength=n)
        poll_sum = np.bincount(owner, weights=events * np.log2(period), minlength=n)
        servers = np.bincount(owner, weights=(events > 0) * np.array(self.servers), minlength=n)
        seen = np.flatnonzero(requests > 0)
        req = requests[seen]
        sockets, which = np.unique(np.array(self.socket), return_inverse=True)
        on = (hi > lo).astype(float)
        socket_rate = np.bincount(which, weights=on / period, minlength=sockets.size)
        busiest = np.zeros(sockets.size)
        np.maximum.at(busiest, which, on / period)
        socket_poll = np.zeros(sockets.size)
        fastest = on / period >= busiest[which]
        socket_poll[which[fastest]] = np.log2(period[fastest])
        ratio = socket_rate * np.exp2(socket_poll)
        socket_owner = np.zeros(sockets.size, dtype=np.int64)
        socket_owner[which] = owner
        host_ratio = np.zeros(n)
        np.maximum.at(host_ratio, socket_owner, ratio)
        mismatch = np.bincount(owner, weights=events * np.array(self.stale), minlength=n)
        running = np.bincount(owner, weights=on, minlength=n)  # daemons running: each polls its servers
        features = {name: np.zeros(seen.size) for name in FEATURES}
        poll = np.round(poll_sum[seen] / req)
        features.update(
            requests_out=req,
            replies_in=req,
            bytes_out=req * REQUEST_BYTES,
            bytes_in=req * REQUEST_BYTES,
            servers=servers[seen],
            client_ports=np.ones(seen.size),
            poll=poll,
            instances=req * np.exp2(poll) / length,
            rate_vs_poll=np.maximum(host_ratio[seen], 1.0),
            server_clients=running[seen],
            server_requests=req,
            server_requests_eff=req,
            server_clients_avg=running[seen],
            interval_min=np.full(seen.size, length),
            org_match=req - mismatch[seen],
            org_mismatch=mismatch[seen],
            mode3_out=req,
            mode4_in=req,
            version4_out=req,
        )
        if self.flow:
            for name in ("poll", "instances", "rate_vs_poll", "interval_min", "org_match", "org_zero", "org_mismatch",
                         "kod_rate", "kod_deny", "kod_rstr", "kod_other", "after_kod", "mode3_out", "mode4_in",
                         "version4_out"):
                features[name] = np.full(seen.size, np.nan)
            features["flows"] = np.ones(seen.size)
        hosts = np.array(self.hosts, dtype=object)[seen]
        return HostIntervals(
            start=t0,
            end=t0 + length,
            host=hosts.astype(str),
            group=np.array(self.groups, dtype=object)[seen].astype(str),
            role=np.full(seen.size, "client"),
            features=features,
        )


def run(detectors: list, fleet: Fleet, start: float, hours: float, length: float = 60.0, gate: bool = True) -> list:
    """Feed ``hours`` of intervals to ``detectors`` the way the engine does (score all,
    then learn with flagged hosts kept out when ``gate``); returns every finding."""
    found = []
    for k in range(int(hours * 3600 / length)):
        batch = fleet.interval(start + k * length, length)
        findings = [f for d in detectors for f in d.score(batch).findings]
        flagged = {f.host for f in findings if f.severity != "info"} if gate else set()
        normal = ~np.isin(batch.host, list(flagged))
        for d in detectors:
            d.learn(batch, normal)
        found.extend(findings)
    return found
