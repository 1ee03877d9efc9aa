"""Findings against labels: per case recall, precision and time to detect; false alerts.

An *alert* is an episode: a host's findings of severity warning or critical
(any detector), merged while they come less than ``merge_gap`` seconds apart.
Info findings are not alerts. An alert is true when its host carries a labelled
case and it overlaps the case's time span (``grace`` seconds after the end
allowed for the interval that closes late); every other alert is false.

Per case (each of issue 10's shapes is a case of its own): recall = labelled
hosts with a true alert / labelled hosts; precision = true alerts / all alerts
on those hosts; time to detect = end of the first finding (event time, when the
alert could have gone out) minus the case start; daemons running at detection
(from the label's ``daemon_starts``); false alerts on the case's hosts per 1,000
of their host-days. A case labelled ``expect = quiet`` (a gateway, a reboot
loop...) has no recall: every alert on its hosts is false. False alerts over
the whole run are normalised per 1,000 host-days (campus addresses times days)
and broken down by host kind and by the detector that raised them.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netmon.batch import Finding, host_name
from netmon.simulate.labels import Labels

if TYPE_CHECKING:
    from netmon.config import Settings

ALERT_SEVERITIES = ("warning", "critical")


@dataclass
class Episode:
    """Consecutive alerting findings on one host."""

    host: str
    start: float
    end: float
    detectors: set[str] = field(default_factory=set)

    def overlaps(self, start: float, end: float) -> bool:
        return self.start < end and self.end > start


def episodes(findings: Iterable[Finding], merge_gap: float) -> list[Episode]:
    """Alerting findings merged per host into episodes."""
    out = []
    for host, items in _alerting(findings).items():
        current: Episode | None = None
        for f in sorted(items, key=lambda f: (f.start, f.end)):
            if current is None or f.start > current.end + merge_gap:
                current = Episode(host, f.start, f.end, {f.detector})
                out.append(current)
            else:
                current.end = max(current.end, f.end)
                current.detectors.add(f.detector)
    return out


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    ordered = sorted(values)
    return {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]}


def _alerting(findings: Iterable[Finding]) -> dict[str, list[Finding]]:
    by_host: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        if f.severity in ALERT_SEVERITIES:
            by_host[f.host].append(f)
    for items in by_host.values():
        items.sort(key=lambda f: (f.end, f.start))
    return by_host


#: what each runaway shape must reach (issue 10): most daemons running at detection
DAEMON_BARS = {"incident": 4, "chrony-runaway-1h": 4, "chrony-runaway-5s": 10}
#: cold-start shapes must be detected within this many intervals of the first packet
COLD_INTERVALS = 2


def daemons_running(case: dict[str, Any], at: float) -> int | None:
    """Daemons the case's host ran at ``at``: from the label's ``daemon_starts``, or for an
    older incident label from ``daemons_before`` and one per ``extra_every`` seconds."""
    detail = case.get("detail", {})
    if "daemon_starts" in detail:
        return sum(1 for t in detail["daemon_starts"] if t <= at)
    if case["case"] == "incident":
        every = float(detail.get("extra_every", 3600.0))
        return int(detail.get("daemons_before", 1)) + 1 + int((at - case["start"]) // every)
    return None


def _bar(name: str, daemons: list[int], ttd: list[float], labelled: int, interval: float | None,
         started: int | None = None) -> dict[str, Any] | None:
    """Issue 10's bar for a runaway shape: its text, what it counts (``by``: daemons running at
    detection, or intervals since the first packet) and ``limit``, and whether every host met it. A runaway already
    running ``started`` daemons, at least its daemon bar, at its first packet (the shipped
    sample starts at 24) can only be judged as a cold start is."""
    past_bar = name in DAEMON_BARS and started is not None and started >= DAEMON_BARS[name]
    if name in DAEMON_BARS and not (past_bar and interval):
        most = DAEMON_BARS[name]
        return {"bar": f"detected by daemon {most}", "by": "daemons", "limit": most,
                "met": len(daemons) == labelled and max(daemons) <= most}
    if (past_bar or name.startswith("cold-start-")) and interval:
        already = f" (already {started} daemons at its first packet)" if past_bar else ""
        return {"bar": f"detected within {COLD_INTERVALS} intervals{already}", "by": "intervals",
                "limit": COLD_INTERVALS, "met": len(ttd) == labelled and max(ttd) <= COLD_INTERVALS * interval + 1e-6}
    return None


def score(labels: Labels, findings: list[Finding], ipv6_prefix: int = 64, merge_gap: float = 3600.0,
          grace: float = 600.0, interval: float | None = None) -> dict[str, Any]:
    """The evaluation report (a JSON-able dict) of ``findings`` against ``labels``.

    Cases whose labels ``expect`` quiet (look-alikes of a runaway) are scored by the
    hosts flagged and the alerts raised on them, all of them false; the others by
    recall, time to detect and, for runaways, the daemons running at detection.
    Each case also counts its false alerts per 1,000 host-days of its hosts over
    the run. ``interval`` (seconds) lets cold-start shapes be judged in intervals.
    """
    alerts = episodes(findings, merge_gap)
    alerting = _alerting(findings)
    by_host: dict[str, list[Episode]] = defaultdict(list)
    for e in alerts:
        by_host[e.host].append(e)
    true_alerts: set[int] = set()
    run_days = (labels.end - labels.start) / 86400.0
    cases: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(c["case"] for c in labels.cases):
        rows = [c for c in labels.cases if c["case"] == name]
        quiet = rows[0].get("expect", "alert") == "quiet"
        ttd: list[float] = []
        first: Counter[str] = Counter()
        on_hosts: dict[int, Episode] = {}
        true_here: set[int] = set()
        flagged: set[str] = set()
        daemons: list[int] = []
        for case in rows:
            key = host_name(case["host"], ipv6_prefix)
            start, until = case["start"], case["end"] + grace
            mine = by_host.get(key, [])
            on_hosts.update((id(e), e) for e in mine)
            if mine:
                flagged.add(key)
            if quiet:
                continue
            true_here.update(id(e) for e in mine if e.overlaps(start, until))
            hit = next((f for f in alerting.get(key, []) if f.end > start and f.start < until), None)
            if hit is None:
                continue
            ttd.append(hit.end - start)
            first[hit.detector] += 1
            running = daemons_running(case, hit.end)
            if running is not None:
                daemons.append(running)
        true_alerts |= true_here
        host_days = len({c["host"] for c in rows}) * run_days
        false_here = len(on_hosts) - len(true_here)
        false_detectors = Counter(d for key, e in on_hosts.items() if key not in true_here for d in e.detectors)
        result: dict[str, Any] = {
            "expect": "quiet" if quiet else "alert",
            "labelled": len(rows),
            "detected": len(ttd),
            "recall": None if quiet else len(ttd) / len(rows),
            "alerts": len(on_hosts),
            "true_alerts": len(true_here),
            "precision": len(true_here) / len(on_hosts) if on_hosts and not quiet else None,
            "time_to_detect_s": _stats(ttd),
            "first_detector": dict(first),
            "flagged_hosts": len(flagged),
            "false_alerts": false_here,
            "host_days": host_days,
            "false_per_1000_host_days": 1000.0 * false_here / host_days if host_days else None,
            "false_by_detector": dict(false_detectors),
        }
        if any("daemon_starts" in c.get("detail", {}) for c in rows) or name == "incident":
            result["daemons_at_detection"] = daemons
            result["daemons_at_detection_stats"] = _stats([float(d) for d in daemons])
        if name == "incident":
            result["flagged_by_4_daemons"] = bool(daemons) and max(daemons) <= 4
        started = [n for n in (daemons_running(c, c["start"]) for c in rows) if n is not None]
        bar = None if quiet else _bar(name, daemons, ttd, len(rows), interval, min(started, default=None))
        if bar:
            result["bar"] = bar
        cases[name] = result
    false = [e for e in alerts if id(e) not in true_alerts]
    kinds = {host_name(h, ipv6_prefix): d.get("kind", "?") for h, d in labels.hosts.items()}
    host_days = labels.host_days
    return {
        "scenario": labels.meta.get("scenario", {}),
        "host_days": host_days,
        "findings": len(findings),
        "alerts": len(alerts),
        "precision": (len(alerts) - len(false)) / len(alerts) if alerts else None,
        "cases": cases,
        "false_alerts": {
            "count": len(false),
            "per_1000_host_days": 1000.0 * len(false) / host_days if host_days else math.nan,
            "by_kind": dict(Counter(kinds.get(e.host, "?") for e in false)),
            "by_detector": dict(Counter(d for e in false for d in e.detectors)),
            "examples": [
                {"host": e.host, "kind": kinds.get(e.host, "?"), "start": e.start, "end": e.end, "detectors": sorted(e.detectors)}
                for e in sorted(false, key=lambda e: e.start)[:25]
            ],
        },
    }


def check_capture(labels: Labels, first_time: float | None, last_time: float | None, rows: int | None) -> None:
    """Raise LabelsError when a capture's span or size does not fit its labels."""
    from netmon.simulate.labels import LabelsError

    if first_time is None or last_time is None:
        raise LabelsError("the capture holds no packets, but the labels describe a simulated run")
    if first_time < labels.start - 1.0 or last_time > labels.end + 60.0:
        raise LabelsError(
            f"the capture spans {first_time:.0f}-{last_time:.0f} but the labels describe {labels.start:.0f}-{labels.end:.0f}: "
            "were they written by the same netmon simulate run?"
        )
    expected = labels.meta.get("rows")
    if rows is not None and expected is not None and rows != expected:
        raise LabelsError(
            f"the capture holds {rows} packets but the labels were written for {expected}: "
            "were they written by the same netmon simulate run?"
        )


DEFAULT_DETECTORS = ("rules", "hosts", "population", "baseline", "drift")


def available_detectors(names: Iterable[str] = DEFAULT_DETECTORS) -> list[str]:
    """The named detectors whose modules import (a detector not built yet is left out)."""
    from netmon import registry

    out = []
    for name in names:
        try:
            registry.plugin("detector", name)
        except ImportError:
            continue
        out.append(name)
    return out


def evaluation_settings(labels: Labels, config: str | None, checkpoint: str, policy: bool = False) -> "Settings":
    """The config for an evaluation: campus and groups from the labels unless the config sets
    them, no sinks, and a throw-away checkpoint so no earlier model state leaks in.

    ``policy`` turns on the rules' server allowlist with the simulation's sanctioned
    servers (a campus that lists the servers its clients should use), unless the
    config sets one.
    """
    from netmon.config import load, validate

    data: dict[str, Any] = load(config).model_dump()
    campus = data["campus"]
    campus["internal"] = campus["internal"] or list(labels.meta["internal"])
    campus["groups"] = campus["groups"] or dict(labels.meta.get("groups", {}))
    if config is None:
        data["detect"]["detectors"] = available_detectors()
    declared = labels.meta.get("gateways", [])
    if declared and "gateways" not in campus["groups"]:  # the gateways the campus knows, as a group of kind gateway
        campus["groups"] = {"gateways": list(declared), **campus["groups"]}
        kinds = data["detect"].setdefault("hosts", {}).setdefault("kinds", {})
        kinds.setdefault("gateways", "gateway")
    rules = data["detect"].setdefault("rules", {})
    if policy and "rules" in data["detect"]["detectors"] and not rules.get("allowed_servers"):
        rules["allowed_servers"] = [str(ipaddress.ip_network(s)) for s in labels.meta.get("sanctioned_servers", [])]
    data["detect"]["checkpoint"] = checkpoint
    data["sources"] = []
    data["sinks"] = []
    return validate(data, config or "evaluation")


@dataclass
class Tally:
    """What went through: frames or rows, and the event-time span, to check against the labels.

    With ``labels`` the first batch is checked at once, so a capture from another
    run stops the evaluation before the whole file is read.
    """

    labels: Labels | None = None
    packets: int = 0
    first: float | None = None
    last: float | None = None

    def watch(self, items: Iterable[Any]) -> Iterable[Any]:
        from netmon.batch import Frames, Observations

        for item in items:
            if isinstance(item, Frames | Observations) and len(item):
                times = item.time if isinstance(item, Frames) else item.rows["time"]
                if self.first is None and self.labels is not None:
                    check_capture(self.labels, float(times.min()), float(times.max()), None)
                self.packets += len(item)
                self.first = float(times.min()) if self.first is None else min(self.first, float(times.min()))
                self.last = float(times.max()) if self.last is None else max(self.last, float(times.max()))
            yield item


def run(settings: "Settings", items: Iterable[Any], labels: Labels | None = None) -> tuple[list[Finding], Tally, int]:
    """Every finding the pipeline makes over ``items``, what went through, intervals scored;
    with ``labels``, LabelsError as soon as the capture turns out not to be theirs."""
    from netmon import pipeline
    from netmon.aggregate import Aggregator
    from netmon.detect.engine import Engine

    stages = pipeline.Stages(sources=[], aggregator=Aggregator(settings.campus, settings.aggregate),
                             engine=Engine(settings.detect, restore=False), sinks=[])
    tally = Tally(labels)
    summary = pipeline.run_items(stages, tally.watch(items))
    return summary.findings, tally, summary.intervals
