"""Text and tables about hosts: the worst hosts of a run, the store's top hosts, one host.

Pure presentation: takes findings (from a run) or plain dicts (from
:class:`netmon.sinks.store.StoreReader`) and returns records with their columns
(rendered by :mod:`netmon.report.listing` as a table, JSON or CSV), so the
commands stay thin and the same listings serve replay, hosts, report and evidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from netmon.batch import SEVERITIES, Finding
from netmon.report.listing import Column, when, width


def console(stderr: bool = False) -> Console:
    """A console as wide as the terminal (for a pipe or file: ``$COLUMNS``, else 100)."""
    return Console(stderr=stderr, width=width())


def _worse(a: str, b: str) -> str:
    return a if SEVERITIES.index(a) >= SEVERITIES.index(b) else b


@dataclass
class HostSummary:
    """One host's findings over a run, folded: per detector the strongest finding."""

    host: str
    group: str
    score: float = 0.0
    severity: str = "info"
    intervals: set[float] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    strongest: dict[str, Finding] = field(default_factory=dict)
    first: float = math.inf
    last: float = -math.inf

    def add(self, finding: Finding) -> None:
        self.score = max(self.score, finding.score)
        self.severity = _worse(finding.severity, self.severity)
        self.intervals.add(finding.start)
        self.counts[finding.detector] = self.counts.get(finding.detector, 0) + 1
        best = self.strongest.get(finding.detector)
        if best is None or finding.score > best.score:
            self.strongest[finding.detector] = finding
        self.first = min(self.first, finding.start)
        self.last = max(self.last, finding.end)


def summarise(findings: Iterable[Finding]) -> list[HostSummary]:
    """Hosts by worst severity, then worst score."""
    hosts: dict[str, HostSummary] = {}
    for finding in findings:
        hosts.setdefault(finding.host, HostSummary(finding.host, finding.group)).add(finding)
    return sorted(hosts.values(), key=lambda h: (SEVERITIES.index(h.severity), h.score), reverse=True)


#: The worst hosts of a run (rows of :func:`worst_hosts`).
WORST_COLUMNS = (
    Column("host", "host"),
    Column("severity", "severity"),
    Column("score", "score", fmt="{:.1f}", justify="right"),
    Column("detectors", "detectors", priority=1, text=True),
    Column("intervals", "flagged intervals", priority=2, justify="right"),
    Column("last", "last (UTC)", priority=3, time=True),
    Column("group", "group", priority=4),
    Column("first", "first (UTC)", priority=5, time=True),
)


def worst_hosts(findings: list[Finding], top: int) -> list[dict[str, Any]]:
    """The ``top`` worst hosts of a run: severity, score, when, which detectors how often."""
    return [{"host": h.host, "group": h.group, "severity": h.severity, "score": h.score, "intervals": len(h.intervals),
             "first": h.first, "last": h.last,
             "detectors": ", ".join(f"{d.removeprefix('rule.')} x{n}" for d, n in sorted(h.counts.items()))}
            for h in summarise(findings)[:top]]


def reasons(findings: list[Finding], top: int) -> list[str]:
    """Per worst host, one line per detector that fired: its strongest explanation."""
    lines = []
    for h in summarise(findings)[:top]:
        lines.append(f"{h.host} ({h.group}, {h.severity}):")
        for detector, best in sorted(h.strongest.items(), key=lambda item: -item[1].score):
            server = f" [server {best.server}]" if best.server else ""
            lines.append(f"  - {detector} x{h.counts[detector]}, worst at {when(best.start)}{server}: "
                         f"{best.explanation}")
    return lines


#: ``netmon hosts``: rows of ``StoreReader.top_hosts``.
HOST_COLUMNS = (
    Column("host", "host"),
    Column("score", "score", fmt="{:.2f}", justify="right"),
    Column("findings", "findings", justify="right"),
    Column("reason", "reason", priority=1, text=True),
    Column("group", "group", priority=2),
    Column("instances", "max inst.", priority=3, fmt="{:.1f}", justify="right"),
    Column("rate_vs_poll", "max x poll", priority=3, fmt="{:.1f}", justify="right"),
    Column("last", "last seen (UTC)", priority=4, time=True),
    Column("requests_out", "req out", priority=5, fmt="{:.0f}", justify="right"),
    Column("detectors", "detectors", priority=6, text=True),
    Column("intervals", "intervals", priority=7, justify="right"),
    Column("role", "role", priority=8),
    Column("first", "first seen (UTC)", priority=9, time=True),
)

#: ``netmon report HOST``: a host's intervals, key features per row.
INTERVAL_COLUMNS = (
    Column("start", "start (UTC)", time=True),
    Column("score", "score", fmt="{:.2f}", justify="right"),
    Column("requests_out", "req out", fmt="{:.0f}", justify="right"),
    Column("instances", "inst.", priority=1, fmt="{:.1f}", justify="right"),
    Column("rate_vs_poll", "x poll", priority=1, fmt="{:.1f}", justify="right"),
    Column("replies_in", "rep in", priority=2, fmt="{:.0f}", justify="right"),
    Column("kod_total", "KoD", priority=2, fmt="{:.0f}", justify="right"),
    Column("after_kod", "after KoD", priority=2, fmt="{:.0f}", justify="right"),
    Column("servers", "servers", priority=3, fmt="{:.0f}", justify="right"),
    Column("client_ports", "ports", priority=4, fmt="{:.0f}", justify="right"),
    Column("org_mismatch", "org bad", priority=5, fmt="{:.0f}", justify="right"),
    Column("poll", "poll", priority=6, fmt="{:.0f}", justify="right"),
    Column("requests_in", "req in", priority=7, fmt="{:.0f}", justify="right"),
    Column("org_zero", "org 0", priority=8, fmt="{:.0f}", justify="right"),
    Column("monlist_out", "monlist", priority=8, fmt="{:.0f}", justify="right"),
    Column("role", "role", priority=9),
    Column("end", "end (UTC)", priority=10, time=True),
)

#: A host's findings folded per detector (rows of :func:`detector_summary`).
SUMMARY_COLUMNS = (
    Column("detector", "detector"),
    Column("findings", "findings", justify="right"),
    Column("explanation", "worst explanation", text=True),
    Column("severity", "severity", priority=1),
    Column("last", "last (UTC)", priority=2, time=True),
    Column("score", "worst score", priority=3, fmt="{:.3g}", justify="right"),
    Column("first", "first (UTC)", priority=4, time=True),
    Column("servers", "servers", priority=5, text=True),
)

#: Single findings (rows of ``StoreReader.host_findings``).
FINDING_COLUMNS = (
    Column("start", "start (UTC)", time=True),
    Column("detector", "detector"),
    Column("explanation", "explanation", text=True),
    Column("severity", "severity", priority=1),
    Column("score", "score", priority=2, fmt="{:.3g}", justify="right"),
    Column("server", "server", priority=3),
    Column("end", "end (UTC)", priority=4, time=True),
)


def interval_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store intervals with ``kod_total`` (every kind of KoD received) added."""
    out = []
    for r in rows:
        kods = [r.get(k) for k in ("kod_rate", "kod_deny", "kod_rstr", "kod_other")]
        total = math.nan if any(k is None or math.isnan(k) for k in kods) else sum(kods)
        out.append({**r, "kod_total": total})
    return out


def detector_summary(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings (store rows) folded per detector: how many, first and last, and the worst one's
    severity, score, explanation and evidence; worst detector first."""
    def rank(f: dict[str, Any]) -> tuple[int, float]:
        severity = f.get("severity")
        return (SEVERITIES.index(severity) if severity in SEVERITIES else 0, f.get("score") or 0.0)

    by_detector: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        by_detector.setdefault(f["detector"], []).append(f)
    rows = []
    for detector, items in by_detector.items():
        worst = max(items, key=rank)
        rows.append({
            "detector": detector, "findings": len(items), "first": min(f["start"] for f in items),
            "last": max(f["end"] for f in items), "severity": worst.get("severity") or "",
            "score": worst.get("score") or 0.0, "explanation": worst.get("explanation") or "",
            "servers": ", ".join(sorted({f["server"] for f in items if f.get("server")})),
            "evidence": worst.get("evidence") or {}, "rank": rank(worst),
        })
    return sorted(rows, key=lambda r: r.pop("rank"), reverse=True)
