"""The "rules" detector: protocol facts that need no learning, each finding explained.

Rules read the per-host features of one interval (see ``netmon.batch.FEATURES``):

* ``rule.poll_rate``: requests to one server far faster than the advertised 2^poll,
  sustained for ``persist`` consecutive intervals (an iburst or a boot-time sync is a
  few fast requests once, and ends within two intervals);
* ``rule.kod_ignored``: requests that kept coming on the same socket after the server
  sent a Kiss-o'-Death (per socket, so a NAT gateway whose one client was told off
  while the others poll normally does not count);
* ``rule.origin``: request origin timestamps that match no reply the server sent that
  socket (zero origins, sent on purpose by data-minimising clients such as chrony, and
  sockets with no reply seen, such as random-port clients, are never counted);
* ``rule.reflector``: mode 7 monlist responses, or mode 6/7 responses far larger than
  the requests, sent by a campus host (an open NTP server used for amplification);
* ``rule.policy``: requests to servers outside ``allowed_servers`` (off when empty).

Client rules look only at what a host sends as a client, so a busy campus NTP
server (many requests in, replies out) never trips them.

Seen on real daemons (Debian 12 ntpsec 1.2 and chrony 4.3 in network namespaces):
both send zero origins (data minimisation) and ntpsec a zero poll field, so for
them the origin rule stays quiet and the poll rule holds them to 64 s (see
``netmon.aggregate.features.expected_poll``); origin checks bite on clients that
copy the server's transmit timestamp, as the reference ntpd of the incident did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from netmon.aggregate.features import expected_poll
from netmon.aggregate.keys import PrefixSet
from netmon.batch import Finding, HostIntervals, addr_halves
from netmon.config import Strict, check_prefixes
from netmon.detect.engine import DetectorOutput
from netmon.detect.explain import top_server


class Config(Strict):
    """Thresholds of the rules; counts are per interval."""

    poll_ratio: float = Field(2.5, gt=1, description="requests per server this many times faster than 2^poll")
    poll_min_requests: float = Field(3, ge=1, description="requests in an interval before its rate is judged")
    persist: int = Field(3, ge=1, description="consecutive intervals the fast polling must last")
    kod_ignored_min: float = Field(3, ge=1, description="requests after a KoD, same socket, in one interval")
    origin_min: float = Field(3, ge=1, description="requests with an origin matching no reply")
    origin_fraction: float = Field(0.5, gt=0, le=1, description="share of checked origins that mismatch")
    monlist_min: float = Field(1, ge=1, description="monlist responses sent")
    amplification_ratio: float = Field(5.0, gt=1, description="mode 6/7 response bytes over request bytes")
    control_bytes_min: float = Field(10_000, ge=0, description="mode 6/7 response bytes before amplification counts")
    allowed_servers: list[str] = Field(default_factory=list, description="server prefixes allowed; empty = policy off")

    _prefixes = field_validator("allowed_servers")(check_prefixes)


@dataclass
class Hit:
    """One rule firing on one host, before it becomes a Finding."""

    row: int
    rule: str
    score: float
    explanation: str
    evidence: dict[str, Any]
    server: str = ""


def _severity(score: float) -> str:
    return "critical" if score >= 4 else "warning"


def _ev(value: float, baseline: float) -> dict[str, float]:
    return {"value": float(value), "baseline": float(baseline)}


class Rules:
    """Stateless but for the fast-polling streaks of hosts currently polling too fast (checkpointed)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.allowed = PrefixSet(config.allowed_servers) if config.allowed_servers else None
        self.streaks: dict[str, tuple[int, float]] = {}

    def state(self) -> dict[str, Any]:
        """The running streaks (a restart or a cluster takeover goes on counting them)."""
        return {"hosts": list(self.streaks), "counts": [c for c, _ in self.streaks.values()],
                "ends": [e for _, e in self.streaks.values()]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.streaks = {str(h): (int(c), float(e)) for h, c, e in zip(state["hosts"], state["counts"], state["ends"])}

    def score(self, intervals: HostIntervals) -> DetectorOutput:
        hits = self._poll_rate(intervals) + self._kod_ignored(intervals) + self._origin(intervals)
        hits += self._reflector(intervals) + self._policy(intervals)
        scores = np.zeros(len(intervals))
        findings = []
        for hit in hits:
            host = str(intervals.host[hit.row])
            scores[hit.row] = max(scores[hit.row], hit.score)
            server = hit.server or top_server(intervals.servers_by_host.get(host, {}))
            findings.append(Finding(host=host, group=str(intervals.group[hit.row]), start=intervals.start,
                                    end=intervals.end, detector=hit.rule, severity=_severity(hit.score),
                                    score=round(hit.score, 3), explanation=hit.explanation,
                                    evidence=hit.evidence, server=server))
        return DetectorOutput(scores={"rules": scores}, findings=findings)

    def _poll_rate(self, iv: HostIntervals) -> list[Hit]:
        c, f = self.config, iv.features
        # comparisons with NaN (unknown from this telemetry) are false: no rule fires on what is not known
        fast = (f["rate_vs_poll"] >= c.poll_ratio) & (f["requests_out"] >= c.poll_min_requests)
        streaks: dict[str, tuple[int, float]] = {}
        hits = []
        for row in np.flatnonzero(fast):
            host = str(iv.host[row])
            count, last_end = self.streaks.get(host, (0, -1.0))
            count = count + 1 if abs(last_end - iv.start) < 1e-6 * (iv.end - iv.start) else 1
            streaks[host] = (count, iv.end)
            if count < c.persist:
                continue
            rate, length = f["rate_vs_poll"][row], iv.end - iv.start
            poll = float(expected_poll(np.array([round(f["poll"][row])]))[0])
            said = (f"the advertised poll of {2 ** poll:.0f} s" if round(f["poll"][row]) != 0
                    else f"{2 ** poll:.0f} s (poll not advertised, {2 ** poll:.0f} s assumed)")
            requests, servers = f["requests_out"][row], f["servers"][row]
            hits.append(Hit(row, "rule.poll_rate", rate / c.poll_ratio, (
                f"~{f['instances'][row]:.0f} client instances behind {f['client_ports'][row]:.0f} source port(s): "
                f"{requests:.0f} requests ({requests / length:.2f}/s) to {servers:.0f} server(s) in {length:.0f} s, "
                f"{rate:.1f}x faster than {said} (threshold {c.poll_ratio}x) "
                f"for {count} intervals; shortest gap {f['interval_min'][row]:.2f} s"),
                {"rate_vs_poll": _ev(rate, 1.0), "instances": _ev(f["instances"][row], f["client_ports"][row]),
                 "requests_out": _ev(requests, servers * length / 2 ** poll),
                 "interval_min": _ev(f["interval_min"][row], 2 ** poll)}))
        self.streaks = streaks
        return hits

    def _kod_ignored(self, iv: HostIntervals) -> list[Hit]:
        c, f = self.config, iv.features
        hits = []
        for row in np.flatnonzero(f["after_kod"] >= c.kod_ignored_min):
            after = f["after_kod"][row]
            kods = {k: f[k][row] for k in ("kod_rate", "kod_deny", "kod_rstr", "kod_other") if f[k][row] > 0}
            told = ", ".join(f"{v:.0f} {k.removeprefix('kod_').upper()}" for k, v in kods.items())
            hits.append(Hit(row, "rule.kod_ignored", after / c.kod_ignored_min, (
                f"KoD ignored: {after:.0f} requests sent on the same socket after the server's Kiss-o'-Death "
                f"without backing off ({told + ' received this interval' if told else 'KoD received earlier'}); "
                f"a compliant client backs off (RATE) or stops (DENY, RSTR); threshold {c.kod_ignored_min:.0f}"),
                {"after_kod": _ev(after, 0.0), **{k: _ev(v, 0.0) for k, v in kods.items()}}))
        return hits

    def _origin(self, iv: HostIntervals) -> list[Hit]:
        c, f = self.config, iv.features
        mismatch, match = f["org_mismatch"], f["org_match"]
        checked = mismatch + match
        share = np.divide(mismatch, checked, out=np.zeros(len(iv)), where=checked > 0)
        hits = []
        for row in np.flatnonzero((mismatch >= c.origin_min) & (share >= c.origin_fraction)):
            hits.append(Hit(row, "rule.origin", share[row] / c.origin_fraction, (
                f"origin timestamps inconsistent: {mismatch[row]:.0f} of {checked[row]:.0f} checked requests "
                f"({share[row]:.0%}) match no reply the server sent that socket (threshold {c.origin_fraction:.0%}, "
                f"at least {c.origin_min:.0f}); {f['org_zero'][row]:.0f} zero-origin (data-minimising) requests "
                f"not counted"),
                {"org_mismatch": _ev(mismatch[row], 0.0), "org_match": _ev(match[row], checked[row])}))
        return hits

    def _reflector(self, iv: HostIntervals) -> list[Hit]:
        c, f = self.config, iv.features
        monlist, amp = f["monlist_out"], f["amplification"]
        big = (amp >= c.amplification_ratio) & (f["ctl_bytes_out"] >= c.control_bytes_min)
        hits = []
        for row in np.flatnonzero((monlist >= c.monlist_min) | big):
            score = max(monlist[row] / c.monlist_min, amp[row] / c.amplification_ratio if big[row] else 0.0)
            ratio = "no requests seen" if np.isnan(amp[row]) else f"{amp[row]:.1f}x amplification"
            hits.append(Hit(row, "rule.reflector", score, (
                f"NTP reflector: {monlist[row]:.0f} monlist (mode 7) responses to outside and {f['ctl_out'][row]:.0f} "
                f"mode 6/7 packets sent ({f['ctl_bytes_out'][row]:.0f} bytes) for {f['ctl_bytes_in'][row]:.0f} bytes "
                f"of requests ({ratio}, threshold {c.amplification_ratio}x)"),
                {"monlist_out": _ev(monlist[row], 0.0), "amplification": _ev(amp[row], 1.0),
                 "ctl_bytes_out": _ev(f["ctl_bytes_out"][row], f["ctl_bytes_in"][row])}))
        return hits

    def _policy(self, iv: HostIntervals) -> list[Hit]:
        if self.allowed is None or not iv.servers_by_host:
            return []
        row_of = {str(h): i for i, h in enumerate(iv.host)}
        pairs = [(host, server, n) for host, servers in iv.servers_by_host.items() for server, n in servers.items()]
        halves = np.array([addr_halves(server) for _, server, _ in pairs], dtype=np.uint64).reshape(-1, 2)
        outside = ~self.allowed.contains(halves[:, 0], halves[:, 1])
        bad: dict[str, list[tuple[str, float]]] = {}
        for (host, server, n), out in zip(pairs, outside):
            if out:
                bad.setdefault(host, []).append((server, n))
        hits = []
        for host, servers in bad.items():
            servers.sort(key=lambda item: -item[1])
            listed = ", ".join(f"{s} ({n:.0f})" for s, n in servers[:5])
            hits.append(Hit(row_of[host], "rule.policy", 1.0, (
                f"requests to {len(servers)} server(s) outside the allowed list: {listed}"),
                {"servers": _ev(len(servers), 0.0)}, server=servers[0][0]))
        return hits


def build(config: Config) -> Rules:
    """The rules detector for the ``[detect.rules]`` settings."""
    return Rules(config)
