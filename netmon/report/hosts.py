"""Text and tables about hosts: the worst hosts of a run, the store's top hosts, one host.

Pure presentation: takes findings (from a run) or plain dicts (from
:class:`netmon.sinks.store.StoreReader`) and returns rich renderables, so the
commands stay thin and the same tables serve replay, hosts and report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table

from netmon.batch import SEVERITIES, Finding

#: Features shown per interval in a host report, in this order: (column, feature, format).
INTERVAL_COLUMNS = (
    ("req out", "requests_out", "{:.0f}"),
    ("rep in", "replies_in", "{:.0f}"),
    ("req in", "requests_in", "{:.0f}"),
    ("servers", "servers", "{:.0f}"),
    ("ports", "client_ports", "{:.0f}"),
    ("inst.", "instances", "{:.1f}"),
    ("poll", "poll", "{:.0f}"),
    ("x poll", "rate_vs_poll", "{:.1f}"),
    ("KoD", "kod_total", "{:.0f}"),
    ("after KoD", "after_kod", "{:.0f}"),
    ("org bad", "org_mismatch", "{:.0f}"),
    ("org 0", "org_zero", "{:.0f}"),
    ("monlist", "monlist_out", "{:.0f}"),
)


def console() -> Console:
    """A console as wide as the terminal, or 160 columns when writing to a file or pipe."""
    probe = Console()
    return probe if probe.is_terminal else Console(width=160)


def when(seconds: float | None) -> str:
    """UNIX seconds as UTC text (event time)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def number(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


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


def worst_hosts_table(findings: list[Finding], top: int) -> Table:
    """The ``top`` worst hosts of a run: severity, score, when, which detectors how often."""
    table = Table(title=f"Worst hosts (top {top})")
    for column in ("host", "group", "severity", "score", "flagged", "first (UTC)", "last (UTC)", "detectors"):
        table.add_column(column, overflow="fold")
    for h in summarise(findings)[:top]:
        detectors = ", ".join(f"{d.removeprefix('rule.')} x{n}" for d, n in sorted(h.counts.items()))
        table.add_row(h.host, h.group, h.severity, f"{h.score:.1f}", f"{len(h.intervals)} intervals", when(h.first),
                      when(h.last), detectors)
    return table


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


def top_hosts_table(rows: list[dict[str, Any]]) -> Table:
    """The store's top hosts (rows from ``StoreReader.top_hosts``)."""
    table = Table(title=f"Top {len(rows)} hosts", show_lines=True)
    for column in ("host", "group", "role", "score", "intervals", "findings", "req out", "max inst.",
                   "max x poll", "last seen", "detectors", "reason"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["host"], r["group"], r["role"], number(r["score"]), str(r["intervals"]), str(r["findings"]),
                      number(r["requests_out"], "{:.0f}"), number(r["instances"], "{:.1f}"),
                      number(r["rate_vs_poll"], "{:.1f}"), when(r["last"]), r["detectors"] or "-", r["reason"] or "-")
    return table


def intervals_table(host: str, rows: list[dict[str, Any]]) -> Table:
    """A host's intervals (rows from ``StoreReader.host_intervals``), key features per row."""
    table = Table(title=f"{host}: {len(rows)} intervals")
    table.add_column("start (UTC)")
    table.add_column("role")
    table.add_column("score", justify="right")
    for title, _, _ in INTERVAL_COLUMNS:
        table.add_column(title, justify="right")
    for r in rows:
        kods = [r.get(k) for k in ("kod_rate", "kod_deny", "kod_rstr", "kod_other")]
        r = {**r, "kod_total": math.nan if any(k is None or math.isnan(k) for k in kods) else sum(kods)}
        table.add_row(when(r["start"]), r["role"], number(r["score"]),
                      *(number(r.get(feature), fmt) for _, feature, fmt in INTERVAL_COLUMNS))
    return table


def host_findings_table(host: str, rows: list[dict[str, Any]]) -> Table:
    """A host's findings (rows from ``StoreReader.host_findings``) with their evidence."""
    table = Table(title=f"{host}: {len(rows)} findings", show_lines=True)
    for column in ("start (UTC)", "detector", "severity", "score", "server", "explanation", "evidence"):
        table.add_column(column, overflow="fold")
    for r in rows:
        evidence = "; ".join(
            f"{k} {number(v.get('value'))} vs {number(v.get('baseline'))}" if isinstance(v, dict) else f"{k} {v}"
            for k, v in r["evidence"].items()
        )
        table.add_row(when(r["start"]), r["detector"], r["severity"], number(r["score"]), r["server"] or "-",
                      r["explanation"], evidence)
    return table
