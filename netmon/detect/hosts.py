"""Host-level view: how many clients a host runs against one server, and how that moves.

The per-socket rules see nothing of the commonest real runaway: a pile of chronyd
sends every request from a new random port with a zero origin, and each instance
honours KoD on its own, so per socket there is one request. Only the host's total
per server, over time, shows it. The aggregator counts, per interval, the
concurrent clients to each host's busiest server across all its sockets
(``server_clients``: requests times their advertised 2^poll over the interval,
start bursts set aside; ``server_own_ports``: those on ports of their own, as
clients behind NAT are). This detector judges the clients NOT on ports of their
own in three views, each named in its findings:

* ``hosts.level``, the group view (cold start): a lower bound of the host's
  clients over its last one and two intervals (client-seconds minus one
  standard deviation of their compound Poisson sum, from the aggregator's
  ``server_requests_eff``, so one slow poller's lone request is no crowd,
  however long the poll it advertises)
  against its group's median and MAD of ``log2(1 + clients)`` this interval.
  It needs no history, so a host already running 20 daemons when monitoring
  starts is flagged in its second interval (its first is often partial). It
  judges a new host once clients behind NAT could have shown ports of their
  own (a poll period after its first request, two for clients polling slower
  than every 4 intervals; at once for a crowd of ``sure`` times ``min_clients``,
  which is also the most any group's threshold can be) and
  until it has been watched ``settle`` s; after that a level that holds is the
  host's own (gateway-like) and only a jump to ``jump`` times its highest level
  brings the group view back. A gateway nobody declared is
  judged like any host until then: by count alone it is a pile of daemons. Groups smaller
  than ``min_group`` judged hosts use the whole campus this interval, a campus
  that small ``min_clients`` alone.
* ``hosts.growth``, the host's own history at any pace: a ratchet on the
  host's clients averaged over the last 30 min (``server_clients_avg``, each
  (host, server) pair averaged by the aggregator) counts each rise of at least a step
  (``step`` clients, or one Poisson standard deviation when larger) to a new
  high, and starts over whenever the level falls back by a step or 15 % (a
  gateway fluctuating around its level, a reboot loop returning to one). The
  average is divided by 1 - s, s the share of KoD among the host's answers over
  the same window (at most 0.8): each chronyd backs off on its own KoD, so a
  pile's request rate saturates near the server's limit while that share rises
  with the pile (0 -> 0.76 from 4 to 18 real daemons; a NAT gateway of 10-14
  chrony clients holds near 0.55, a level, not a climb). The KoD counted are the
  busiest server's (``server_kod``) and the answers all the host's
  (``replies_in``), on purpose: the first are a part of the second, so s is at
  most that server's own share and the correction never larger than its own
  would be; it falls short only by the other servers' answers, a host's own
  daemon's 14 or so an hour beside a pile's hundreds, and a per-server count
  of answers would cost a feature column for that. A new host's ratchet
  starts once it has been watched two intervals and four of its clients' poll
  periods (at most the window) past its first, often partial, interval. A
  runaway adds daemons and never falls back: ``steps`` rises, to
  ``growth_ratio`` times the level the climb began at (for a gateway, times
  the highest level it had shown by then: a VPN concentrator's mornings are
  no growth), make a finding whether they take minutes or days, since only
  rises are counted.
* the KoD view, KoD at host level: after the busiest server's first KoD to
  the host (any socket), the host's request rate to it (over 10 min) against
  the rate at that KoD. Each chronyd honours its own KoD, so per socket nothing
  is ignored; a host still drawing ``kod_min`` KoD per ``kod_settle`` s since
  the first whose total rate is not down to ``kod_lowered`` of it, while it
  runs ``kod_clients`` or more clients, ignores them as a whole. It is
  evidence, not a finding of its own: on real daemons a NAT gateway of chrony
  clients behind a strict server draws as many KoD and holds its rate as well
  (each client backs off, the server's limit holds the sum), so it makes a
  level or growth finding critical and is named in it.

Campus groups can be declared gateways (NAT, VPN) or servers in ``kinds``; each
kind has its own thresholds (by default neither is judged on its level). An
undeclared host is gateway-like, and judged as a gateway, once its clients on
ports of their own reached ``own_ports`` and ``own_share`` of its clients
(random ports repeat by chance, hence the share), or once its count fell to
half a high of ``swing`` clients or more (a VPN concentrator in the evening; a
NAT of one desktop and two laptops at night, from 3 to 1: a pile of daemons
only grows).

State per host: 20 numbers (96 bytes: 4 of 8 bytes, 16 of 4) plus its key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from netmon.batch import Finding, HostIntervals
from netmon.config import Strict
from netmon.detect.engine import DetectorOutput
from netmon.detect.explain import top_server
from netmon.detect.hoststate import Column, HostKeys, HostModel, Visit, categories

#: MAD of a normal distribution is this times smaller than its standard deviation.
MAD_SCALE = 1.4826
#: Window (seconds) of the request rate the KoD view compares.
KOD_RATE_WINDOW = 600.0
#: Share of its high a ratchet's level may lose before the climb starts over.
FALL_BACK = 0.15
#: Highest share of KoD among a host's answers the growth view's estimate is corrected for (at most x5).
KOD_SHARE_CAP = 0.8
#: A new host's ratchet starts once it has been watched this many intervals and this many of its
#: clients' poll periods (at most the window) beyond its first, often partial, interval.
SETTLE_INTERVALS = 2
SETTLE_POLLS = 4


class Thresholds(Strict):
    """How one kind of host is judged."""

    level: bool = Field(True, description="judge the level against the group (the cold-start view)")
    min_clients: float = Field(12.0, gt=0, description="fewest clients (not on ports of their own) worth a level finding")
    steps: int = Field(2, ge=1, description="rises to a new high, never falling back, that make a growth finding")
    step: float = Field(0.7, gt=0, description="smallest rise (clients) that counts as a step")
    kod_min: float = Field(10.0, ge=1, description="KoD from the busiest server per kod_settle s, on average since the first")
    kod_clients: float = Field(4.0, ge=0, description="fewest clients before a host can ignore KoD as a whole")
    growth_ratio: float = Field(2.0, ge=1, description="times its level at the climb's start a growing host must reach")


def many_clients() -> Thresholds:
    """Gateways and campus servers: many honest clients by design, so their level is not judged,
    only growth by larger steps, and KoD only in large numbers."""
    return Thresholds(level=False, steps=6, step=3.0, kod_min=200.0, kod_clients=1000.0, growth_ratio=4.0)


class Config(Strict):
    """``[detect.hosts]``."""

    kinds: dict[str, Literal["gateway", "server"]] = Field(
        default_factory=dict, description="campus group -> kind (gateway: NAT/VPN; server); other groups are clients"
    )
    clients: Thresholds = Field(default_factory=Thresholds, description="thresholds for ordinary client hosts")
    gateway: Thresholds = Field(default_factory=many_clients, description="thresholds for groups of kind gateway")
    server: Thresholds = Field(default_factory=many_clients, description="thresholds for groups of kind server")
    z: float = Field(4.0, gt=0, description="robust z (MADs above the group median of log2(1 + clients))")
    mad_floor: float = Field(0.5, gt=0, description="smallest MAD (log2 units) a group's spread is taken as")
    min_group: int = Field(20, ge=3, description="hosts a group needs this interval for its own statistics")
    sure: float = Field(8.0, ge=1, description="times min_clients that is a crowd beyond doubt: judged without "
                        "waiting for ports of their own, and extreme in any group")
    jump: float = Field(4.0, ge=1, description="times its highest normal level that has an old host judged by its group")
    window: float = Field(1800.0, gt=0, description="seconds the host's clients are averaged over: follows "
                          "[aggregate] pair_window (leave it out; set, it must equal pair_window)")
    settle: float = Field(2400.0, ge=0, description="seconds a new host is judged by its group (cold start); then its level is its own")
    own_ports: float = Field(2.0, gt=0, description="clients on ports of their own that make an undeclared host gateway-like")
    swing: float = Field(2.5, gt=0, description="clients of a high whose fall to half makes an undeclared host gateway-like")
    own_share: float = Field(0.25, gt=0, le=1, description="share of its clients those must be (random ports repeat by chance)")
    kod_window: float = Field(3600.0, gt=0, description="seconds after a first KoD during which the rate is compared")
    kod_settle: float = Field(600.0, gt=0, description="seconds after the first KoD before the rate is judged")
    kod_lowered: float = Field(0.5, gt=0, le=1, description="share of the rate at the first KoD below which it counts as lowered")
    forget_after: float = Field(3 * 86400.0, gt=0, description="seconds of silence after which a host starts over: "
                                "past a weekend, so a VPN concentrator silent each night keeps its highs")


KINDS = ("clients", "gateway", "server")
#: The state each host keeps between intervals, the one list of it: ``_observe`` reads every column
#: (carried) and :meth:`Hosts.learn` stores every column from what ``_observe`` and ``score`` made.
#: ``prev_*`` hold this interval's values for the next; ``peak`` is the highest group-view level.
STATE: dict[str, Column] = {
    "prev_seconds": Column("f4", 0, 0.0),  # the previous interval's loose-client seconds
    "prev_requests": Column("f4", 0, 0.0),  # ... and its effective request count (server_requests_eff)
    "high": Column("f4", 0, np.nan),
    "base": Column("f4", 0, np.nan),
    "steps": Column("f4", 0, 0.0),
    "climb": Column("f8", 0, np.nan),
    "peak": Column("f4", 0, np.nan),
    "own_seen": Column("f4", 0, 0.0),
    "top": Column("f4", 0, 0.0),
    "swung": Column("f4", 0, 0.0),
    "climb_top": Column("f4", 0, 0.0),
    "tracked": Column("f4", 0, 0.0),
    "kod_time": Column("f8", 0, np.nan),
    "kod_rate": Column("f4", 0, np.nan),
    "kods": Column("f4", 0, 0.0),
    "kod_sum": Column("f4", 0, 0.0),  # KoD from the busiest server, summed with weight exp(-age / window)
    "answer_sum": Column("f4", 0, 0.0),  # ... and all replies to the host, likewise
}


@dataclass
class _Seen:
    """What scoring computed for one interval, handed to learning: the visit,
    each host's state moved on by this interval, its clients averaged over the
    window and divided by 1 - its KoD share (what the growth view judges), its kind (index into :data:`KINDS`; undeclared hosts with clients on
    ports of their own count as gateways) and that kind's thresholds."""

    visit: Visit
    state: dict[str, np.ndarray]
    smooth: np.ndarray
    kind: np.ndarray
    thresholds: dict[str, np.ndarray]


def _lower(requests: np.ndarray, seconds: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Clients at least: client-seconds scaled by (requests - sqrt(requests)) / requests, over ``span`` s.

    ``requests`` is the effective count (``server_requests_eff``), so this is the
    client-seconds minus one standard deviation of their compound Poisson sum: a
    lone request of a slow poller, however heavy, is no crowd."""
    kept = np.maximum(requests - np.sqrt(requests), 0.0)
    return np.divide(seconds * kept, requests * span, out=np.zeros_like(seconds), where=requests > 0)


def _pooled(requests: np.ndarray, seconds: np.ndarray, prev_requests: np.ndarray,
            prev_seconds: np.ndarray) -> np.ndarray:
    """The effective request count of two intervals together: (S1 + S2)^2 / (S1^2/n1 + S2^2/n2)."""
    squares = (np.divide(seconds * seconds, requests, out=np.zeros_like(seconds), where=requests > 0)
               + np.divide(prev_seconds * prev_seconds, prev_requests, out=np.zeros_like(seconds),
                           where=prev_requests > 0))
    total = seconds + prev_seconds
    return np.divide(total * total, squares, out=np.zeros_like(seconds), where=squares > 0)


def _clock(t: float) -> str:
    return f"{int(t // 3600) % 24:02d}:{int(t // 60) % 60:02d}"


def _against(now: float, then: float) -> str:
    """A request rate now against the rate at the first KoD, the change said outright."""
    if not math.isfinite(now):  # a host seen in flows only this interval
        return "its request rate is unknown this interval"
    text = f"{now:,.0f} requests/h now"
    if not (then > 0 and math.isfinite(then)):
        return text
    ratio = now / then
    said = "about" if abs(ratio - 1.0) < 0.05 else f"{ratio:.1f} times" if ratio > 1.0 else f"{ratio:.0%} of"
    return f"{text}, {said} the {then:,.0f}/h at the first KoD"


def _ago(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


class Hosts(HostModel):
    """The host-level detector (``hosts``)."""

    name = "hosts"

    def __init__(self, config: Config) -> None:
        super().__init__(("server_requests",), STATE, KOD_RATE_WINDOW, config.forget_after)
        self.config = config
        self._seen: _Seen | None = None

    def _kind_columns(self, group: np.ndarray, gateway_like: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Each host's kind index (0 clients, 1 gateway, 2 server) and its thresholds as columns."""
        kind = np.where(gateway_like, KINDS.index("gateway"), 0)
        for name, k in self.config.kinds.items():
            kind[group == name] = KINDS.index(k)
        table = [getattr(self.config, k) for k in KINDS]
        columns = {field: np.array([float(getattr(t, field)) for t in table])[kind] for field in Thresholds.model_fields}
        return kind, columns

    def _group_threshold(self, group: np.ndarray, level: np.ndarray,
                         judged: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per host: the level its group's robust statistics call extreme, the group's median (clients;
        the campus's for a group too small, NaN for a campus too small), and whether its own group's."""
        cfg = self.config
        logs = np.log2(1.0 + level)
        threshold = np.zeros(level.shape[0])
        median = np.full(level.shape[0], np.nan)
        own = np.zeros(level.shape[0], dtype=bool)
        names, inverse = categories(group)
        campus = np.flatnonzero(judged)

        def stats(members: np.ndarray) -> tuple[float, float]:
            values = logs[members]
            mid = float(np.median(values))
            spread = max(float(np.median(np.abs(values - mid))), cfg.mad_floor)
            return mid, mid + cfg.z * MAD_SCALE * spread

        pooled = stats(campus) if campus.size >= cfg.min_group else None
        for g in range(names.shape[0]):
            rows = np.flatnonzero(inverse == g)
            members = rows[judged[rows]]
            own[rows] = members.size >= cfg.min_group
            found = stats(members) if own[rows[0]] else pooled
            if found is not None:
                median[rows], threshold[rows] = 2.0 ** found[0] - 1.0, 2.0 ** found[1] - 1.0
        return threshold, median, own

    def _observe(self, intervals: HostIntervals, keys: HostKeys | None) -> _Seen:
        if self._seen is not None and self._seen.visit.intervals is intervals:
            return self._seen
        visit = self.visit(intervals, keys)
        length = visit.length
        f = intervals.features
        clients = np.asarray(f["server_clients"], dtype=np.float64)
        own = np.nan_to_num(np.asarray(f["server_own_ports"], dtype=np.float64))
        requests = np.asarray(f["server_requests"], dtype=np.float64)
        loose = np.maximum(clients - own, 0.0)  # NaN stays NaN: a host seen in flows only
        kept = np.divide(loose, clients, out=np.zeros_like(loose), where=clients > 0)  # their share of the requests
        loose_requests = requests * kept
        loose_effective = np.nan_to_num(np.asarray(f["server_requests_eff"], dtype=np.float64)) * kept
        adjacent = ~visit.fresh & (np.abs(np.nan_to_num(visit.elapsed, nan=np.inf) - length) < 1e-6 * length + 1e-3)
        prev_seconds = np.where(adjacent, self.carried(visit, "prev_seconds"), 0.0)
        prev_requests = np.where(adjacent, self.carried(visit, "prev_requests"), 0.0)
        seconds = np.nan_to_num(loose) * length
        one = _lower(loose_effective, seconds, np.full_like(seconds, length))
        two = _lower(_pooled(loose_effective, seconds, prev_requests, prev_seconds), seconds + prev_seconds,
                     np.full_like(seconds, 2 * length))
        level = np.where(visit.fresh | np.isnan(loose), np.nan, np.maximum(one, two))
        # clients over the last pair window (the aggregator averages each (host, server) pair, and
        # reports the busiest pair seen this interval; the busiest overall may be silent this interval,
        # so its average is held here, decaying as the pair's own would)
        seen_now = np.maximum(np.nan_to_num(np.asarray(f["server_clients_avg"], dtype=np.float64))
                              - np.nan_to_num(f["server_own_ports_avg"]), 0.0)
        keep = np.exp(-np.nan_to_num(visit.elapsed, nan=np.inf) / self.config.window)
        held = self.carried(visit, "tracked") * keep
        tracked = np.nan_to_num(np.maximum(seen_now, held))
        kod_sum = self.carried(visit, "kod_sum") * keep + np.nan_to_num(np.asarray(f["server_kod"], dtype=np.float64))
        answer_sum = self.carried(visit, "answer_sum") * keep + np.nan_to_num(np.asarray(f["replies_in"], dtype=np.float64))
        share = np.minimum(np.divide(kod_sum, answer_sum, out=np.zeros_like(kod_sum), where=answer_sum > 0), KOD_SHARE_CAP)
        smooth = tracked / (1.0 - share)
        state = {
            "level": level,
            "loose": loose,
            "seconds": seconds,
            "loose_requests": loose_requests,
            "loose_effective": loose_effective,
            "rate": visit.current[:, 0],
            "tracked": tracked,
            "kod_sum": kod_sum,
            "answer_sum": answer_sum,
            "share": share,
            # the rest of the state (prev_* were read above; learn stores this interval's in their place)
            **{name: self.carried(visit, name)
               for name in STATE.keys() - {"prev_seconds", "prev_requests", "tracked", "kod_sum", "answer_sum"}},
        }
        cfg = self.config
        evidence = np.where(own >= cfg.own_share * np.nan_to_num(clients), own, 0.0)
        state["own_seen"] = np.fmax(state["own_seen"], evidence)
        # a count that fell to half a high of swing clients or more fluctuates: a pile of daemons only grows
        watched = visit.age >= cfg.window + visit.length  # a first (often partial) window is no high to fall from
        fell = watched & (state["top"] >= cfg.swing) & (smooth <= 0.5 * state["top"])
        state["swung"] = np.where(fell, np.fmax(state["swung"], state["top"]), state["swung"])
        state["top_before"] = state["top"]
        state["top"] = np.where(watched, np.fmax(state["top"], smooth), state["top"])
        gateway_like = (state["own_seen"] >= cfg.own_ports) | (state["swung"] >= cfg.swing)
        kind, th = self._kind_columns(np.asarray(intervals.group, dtype=str), gateway_like)
        state["step_min"] = th["step"]
        self._advance(state, smooth, visit, np.nan_to_num(intervals.features["server_kod"]))
        self._seen = _Seen(visit, state, smooth, kind, th)
        return self._seen

    def _advance(self, s: dict[str, np.ndarray], smooth: np.ndarray, v: Visit, kod: np.ndarray) -> None:
        """Move each host's ratchet and KoD episode on by this interval (in ``s``)."""
        cfg, t = self.config, v.t
        weight = np.divide(s["seconds"], s["loose_requests"], out=np.full_like(smooth, 64.0),
                           where=s["loose_requests"] > 0)
        # one Poisson standard deviation of the average, grown as the KoD correction grows it
        step = np.maximum(s.pop("step_min"),
                          np.sqrt(smooth * weight / (np.minimum(v.age, cfg.window) * (1.0 - s["share"]))))
        high = s["high"]
        # a first (often partial) interval, and the few after it while a poll period or two of requests
        # fill the average, are no base to climb from
        settling = v.age < np.minimum(np.maximum(SETTLE_INTERVALS * v.length, SETTLE_POLLS * weight), cfg.window) + v.length
        fell = settling | np.isnan(high) | (smooth <= high - np.maximum(step, FALL_BACK * high))
        rose = ~fell & (smooth >= high + step)
        s["step"], s["weight"] = step, weight
        s["high"] = np.where(fell | rose, smooth, high)
        s["base"] = np.where(fell, smooth, s["base"])
        s["steps"] = np.where(fell, 0.0, s["steps"] + rose)
        s["climb"] = np.where(fell, t, s["climb"])
        s["climb_top"] = np.where(fell, s.pop("top_before"), s["climb_top"])  # its highest level when the climb began
        expired = np.isnan(s["kod_time"]) | (t - s["kod_time"] > cfg.kod_window)
        begins = (kod > 0) & expired
        s["kod_time"] = np.where(begins, t, s["kod_time"])
        s["kod_rate"] = np.where(begins, s["rate"], s["kod_rate"])
        s["kods"] = np.where(begins, kod, np.where(expired, 0.0, s["kods"] + kod))

    def score(self, intervals: HostIntervals, keys: HostKeys | None = None) -> DetectorOutput:
        """Level, growth and host-level KoD findings for every host of the interval."""
        cfg = self.config
        seen = self._observe(intervals, keys)
        s, v = seen.state, seen.visit
        t, f = v.t, intervals.features
        group = np.asarray(intervals.group, dtype=str)
        kind, th = seen.kind, seen.thresholds
        level = s["level"]
        known = ~np.isnan(level)
        threshold, median, own_group = self._group_threshold(group, np.nan_to_num(level), known & (kind == 0))
        # a crowd of sure x min_clients is extreme in any group of clients: at cold start a group's first
        # judged hosts are its busiest (only they were seen twice), and their spread can put the group's
        # threshold past any pile of daemons
        crowd = cfg.sure * th["min_clients"]
        threshold = np.minimum(np.maximum(threshold, th["min_clients"]), crowd)
        young = (t - v.first) < cfg.settle
        jumped = ~young & (level >= cfg.jump * np.fmax(np.nan_to_num(s["peak"], nan=0.0), 1.0))
        # clients behind NAT show ports of their own with their second request, a poll period after the
        # first: a new host is judged once that could have happened (two periods for clients polling
        # slower than every 4 intervals), unless its crowd is beyond doubt
        period = np.maximum(s["weight"], np.exp2(np.nan_to_num(f["poll"])))
        period = np.where(period > 4 * v.length, 2 * period, period)
        waited = (v.age >= np.minimum(period, cfg.settle)) | (level >= crowd)
        level_hit = known & (th["level"] > 0) & (level >= threshold) & ((young & waited) | jumped)

        smooth = seen.smooth
        # a gateway grows past its own highest level, not just from its night-time low
        start = np.where(kind > 0, np.maximum(s["base"], s["climb_top"]), s["base"])
        growth_hit = (known & (s["steps"] >= th["steps"]) & (smooth - s["base"] >= th["steps"] * th["step"])
                      & (smooth >= th["growth_ratio"] * np.maximum(start, 1.0)))
        kod = np.nan_to_num(f["server_kod"])
        active = ~np.isnan(s["kod_time"]) & (t - s["kod_time"] <= cfg.kod_window)
        not_lowered = active & (s["rate"] >= cfg.kod_lowered * s["kod_rate"])
        since = t - s["kod_time"] + v.length
        kod_hit = (not_lowered & (since > cfg.kod_settle) & (s["kods"] * cfg.kod_settle >= th["kod_min"] * since)
                   & (smooth >= th["kod_clients"]) & (kod > 0))

        scores = np.where(known, np.minimum(np.nan_to_num(level) / threshold, 9.99), np.nan)
        findings = []
        for i in np.flatnonzero(level_hit | growth_hit).tolist():
            findings.append(self._finding(intervals, i, s, smooth, bool(level_hit[i]), bool(growth_hit[i]),
                                          bool(kod_hit[i]), bool(not_lowered[i]), threshold[i], median[i],
                                          bool(own_group[i]), KINDS[kind[i]], bool(young[i])))
        return DetectorOutput(scores={"hosts": scores}, findings=findings)

    def _finding(self, iv: HostIntervals, i: int, s: dict[str, np.ndarray], smooth: np.ndarray, level: bool,
                 growth: bool, kod: bool, not_lowered: bool, threshold: float, median: float, own_group: bool,
                 kind: str, young: bool) -> Finding:
        """One plain sentence: the estimate, its basis, and each view's evidence."""
        cfg, f = self.config, iv.features
        host = str(iv.host[i])
        servers = iv.servers_by_host.get(host, {}) if iv.servers_by_host else {}
        server = top_server(servers)
        t = float(iv.end)
        poll = float(f["poll"][i])
        basis = (f"counted from its requests, each standing for a client that polls every {2 ** poll:.0f} s as "
                 "the requests announce" if math.isfinite(poll) and poll != 0 else
                 "counted from its requests, each standing for a client that polls every 64 s: poll not "
                 "advertised, 64 s assumed")
        own = float(np.nan_to_num(f["server_own_ports"][i]))
        clients = float(s["level"][i]) if level else float(smooth[i])
        share = float(s["share"][i])
        averaged = "" if level else f"; averaged over up to {_ago(cfg.window)}" + (
            f", times {1 / (1 - share):.1f} for the {share:.0%} of its answers that were KoD, as each client "
            "backs off on its own" if share > 0 else "")
        parts = [f"~{clients:.0f} concurrent clients to {server or 'one server'} ({basis}, start bursts set aside"
                 + averaged + (f"; {own:.0f} more on ports of their own, as behind NAT" if own >= 1 else "") + ")"]
        views, evidence = [], {"clients": {"value": clients, "baseline": float(s["base"][i])}}
        if level:
            views.append("group view" if young else "group view (a jump past its own highest level)")
            group = f"group {iv.group[i]}" if own_group else f"the campus (group {iv.group[i]} has too few hosts)"
            parts.append(f"{threshold:.0f} or more is far above the usual host of {group} this interval "
                         f"(typical: {median:.0f})" if math.isfinite(median) else
                         f"{threshold:.0f} or more is too many for one machine (too few hosts this interval to "
                         "compare it with)")
            evidence["level"] = {"value": float(s["level"][i]), "baseline": float(threshold)}
        if growth:
            views.append("growth view")
            parts.append(f"up from {s['base'][i]:.0f} at {_clock(s['climb'][i])} ({_ago(t - s['climb'][i])} ago) "
                         f"in {s['steps'][i]:.0f} steps, never falling back")
            evidence["steps"] = {"value": float(s["steps"][i]), "baseline": 0.0}
        kods = float(s["kods"][i])
        if kods > 0:
            cut = "half" if cfg.kod_lowered == 0.5 else f"{cfg.kod_lowered:.0%}"
            parts.append(f"{kods:.0f} KoD received from it since {_clock(s['kod_time'][i])}, asking it to slow "
                         f"down; it {'has not' if not_lowered else 'has'} cut its requests to {cut} or less: "
                         + _against(float(s["rate"][i]), float(s["kod_rate"][i])))
            evidence["kods"] = {"value": kods, "baseline": 0.0}
        if kod:
            views.append("KoD view")
        if kind != "clients":
            declared = str(iv.group[i]) in cfg.kinds
            why = (f"{s['own_seen'][i]:.0f} clients on ports of their own seen" if s["own_seen"][i] >= cfg.own_ports
                   else f"its count fell to half of {s['swung'][i]:.0f} before")
            views.append(f"{kind} thresholds" + ("" if declared else f" (gateway-like: {why})"))
        judged = ", ".join(views)
        severe = (level and growth) or kod or clients >= 100
        detector = "hosts.level" if level else "hosts.growth"
        return Finding(host=host, group=str(iv.group[i]), start=float(iv.start), end=t, detector=detector,
                       severity="critical" if severe else "warning",
                       score=round(float(clients / max(threshold if level else s["base"][i] + 1.0, 1.0)), 3),
                       explanation=f"host {host}: " + "; ".join(parts) + f" [judged by: {judged}]",
                       evidence=evidence, server=server)

    def learn(self, intervals: HostIntervals, normal: np.ndarray, keys: HostKeys | None = None) -> None:
        """Keep every host's ratchet, KoD episode, last interval and highest level.

        The highest level learns from every interval, flagged or not: a host
        past its cold start whose large level holds is its own normal
        (gateway-like), and only a jump past it, or growth, is judged again."""
        seen = self._observe(intervals, keys)
        self._seen = None
        s = seen.state
        kept = {**s, "prev_seconds": s["seconds"], "prev_requests": s["loose_effective"],
                "peak": np.fmax(s["peak"], s["level"])}
        self.close(seen.visit, **{name: kept[name] for name in STATE})


def build(config: Config) -> Hosts:
    return Hosts(config)
