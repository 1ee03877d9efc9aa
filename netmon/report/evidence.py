"""The per-host evidence report: what a security team attaches to its answer to an abuse email.

``write_report(db, host, out_dir)`` reads the embedded store
(:class:`~netmon.sinks.store.StoreReader`) and writes, in ``out_dir``:

* ``report.html``: one self-contained page (plot inline) an abuse desk can attach,
  ``report.md`` with the same content, and ``report.pdf`` on request (see
  :mod:`netmon.report.page`);
* ``rate.png``: requests sent and replies received per second over time, from
  before the first finding on, and KoD received / requests after KoD per interval;
* ``excerpt.pcap``: the host's UDP/123 packets in the report's time range, cut
  from the pcap files the store recorded as replayed (``inputs``) when they are
  still there, or from the pcap the live collector kept for the host.

Times are UNIX seconds (event time) in code and UTC in the report.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from netmon.batch import Frames, addr_text
from netmon.sinks.store import StoreReader

log = structlog.get_logger(__name__)

KOD_COLUMNS = ("kod_rate", "kod_deny", "kod_rstr", "kod_other", "after_kod")
MAX_PACKETS = 100_000
#: Seconds of the host's traffic before its first finding shown for contrast: half the
#: flagged time, at least an hour, at most a day (what the store still holds).
BEFORE_MIN, BEFORE_MAX = 3600.0, 86400.0


@dataclass
class Excerpt:
    """The offending packets cut from the replayed captures."""

    path: Path | None = None
    packets: int = 0
    truncated: bool = False
    sources: list[str] = field(default_factory=list)
    servers: Counter = field(default_factory=Counter)
    skipped_other_linktypes: int = 0


@dataclass
class Evidence:
    """Everything the report says about one host between ``since`` and ``until``, and the
    ``before`` intervals (up to the first finding) that show what the host did until then."""

    host: str
    since: float
    until: float
    intervals: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    before: list[dict[str, Any]] = field(default_factory=list)
    excerpt: Excerpt = field(default_factory=Excerpt)

    @property
    def first_finding(self) -> float | None:
        return min((f["start"] for f in self.findings), default=None)

    def timeline(self) -> list[dict[str, Any]]:
        """``before`` and the period's intervals, in time order, each once."""
        rows = {row["start"]: row for row in (*self.before, *self.intervals)}
        return [rows[t] for t in sorted(rows)]

    def series(self, name: str, rows: list[dict[str, Any]] | None = None) -> np.ndarray:
        return np.array([num(row.get(name)) for row in (self.intervals if rows is None else rows)], dtype=np.float64)

    def per_second(self, name: str, rows: list[dict[str, Any]] | None = None) -> np.ndarray:
        rows = self.intervals if rows is None else rows
        length = np.array([max(row["end"] - row["start"], 1e-9) for row in rows])
        return self.series(name, rows) / length

    def mean_rate(self, rows: list[dict[str, Any]], name: str = "requests_out") -> float:
        """Packets per second over ``rows`` (total over their summed length); NaN when empty."""
        seconds = sum(row["end"] - row["start"] for row in rows)
        return float(np.nansum(self.series(name, rows)) / seconds) if seconds > 0 else math.nan

    def estimate(self, column: str = "instances") -> dict[str, float]:
        """Latest, median and peak of an estimate over the period: ``instances`` (client
        instances from one interval's timing: independent poll schedules) or
        ``server_clients_avg`` (concurrent clients to the host's busiest server, averaged over
        the aggregator's ``pair_window``, as the hosts detector counts them)."""
        values = self.series(column)
        known = values[~np.isnan(values)]
        if not len(known):
            return {}
        return {"latest": float(known[-1]), "median": float(np.median(known)), "peak": float(known.max())}

    def kod_timeline(self) -> list[dict[str, Any]]:
        """Intervals in which KoD arrived or requests went on after one."""
        return [row for row in self.intervals if any(num(row.get(c)) > 0 for c in KOD_COLUMNS)]

    def kod_totals(self) -> dict[str, float]:
        """KoD received per kind (RATE, DENY, RSTR, other) and requests sent after one, over the period."""
        return {c: float(np.nansum(self.series(c))) for c in KOD_COLUMNS}

    def top_servers(self, n: int = 10) -> list[tuple[str, float]]:
        """Servers by requests: from the packets when there are any, else from the findings."""
        if self.excerpt.servers:
            return self.excerpt.servers.most_common(n)
        counts: Counter = Counter(f["server"] for f in self.findings if f.get("server"))
        return counts.most_common(n)


def num(value: Any) -> float:
    """A stored feature as a float; None (unknown from this telemetry) as NaN."""
    return math.nan if value is None else float(value)


def utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_since(text: str, last: float) -> float:
    """``--since``: an ISO 8601 time (UTC unless it says otherwise) or a duration before ``last``."""
    from netmon.sinks.alerts.silences import parse_duration

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return last - parse_duration(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def gather(reader: StoreReader, host: str, since: str | None = None) -> Evidence:
    """The host's intervals and findings from the store (all, or from ``since`` on), and
    up to ``BEFORE_MAX`` seconds of its intervals before its first finding, for contrast."""
    every = reader.host_intervals(host)
    if not every:
        raise LookupError(f"host {host} has no intervals in the store {reader.path}")
    last = max(row["end"] for row in every)
    start = parse_since(since, last) if since else min(row["start"] for row in every)
    intervals = [row for row in every if row["end"] > start]
    if not intervals:
        raise LookupError(f"host {host} has no intervals after {utc(start)} (its last ends {utc(last)})")
    findings = [f for f in reader.host_findings(host) if f["end"] > start]
    evidence = Evidence(host=host, since=start, until=last, intervals=intervals, findings=findings)
    first = evidence.first_finding
    if first is not None:
        reach = min(max(BEFORE_MIN, 0.5 * (last - first)), BEFORE_MAX)
        evidence.before = [row for row in every if first - reach < row["start"] and row["end"] <= first]
    return evidence


def _select(frames: Frames, index: np.ndarray) -> Frames:
    """The frames at ``index``, copied into one contiguous buffer."""
    caplen = frames.caplen[index].astype(np.int64)
    offset = np.zeros(len(index), dtype=np.int64)
    if len(index):
        offset[1:] = np.cumsum(caplen)[:-1]
    starts = frames.offset[index].astype(np.int64)
    gather_at = np.repeat(starts - offset, caplen) + np.arange(int(caplen.sum()))
    return Frames(
        data=frames.data[gather_at],
        offset=offset,
        caplen=frames.caplen[index],
        wirelen=frames.wirelen[index],
        time=frames.time[index],
        linktype=frames.linktype[index],
        weight=frames.weight[index],
    )


def cut_pcap(inputs: list[dict[str, Any]], host: str, since: float, until: float, out: Path,
             limit: int = MAX_PACKETS) -> Excerpt:
    """Write the host's UDP/123 packets between ``since`` and ``until`` from the recorded inputs
    (from a live collector's packet file: every packet from ``since`` on)."""
    from netmon.decode.frames import decode_with_index
    from netmon.sources.pcapfile import CaptureError, read_frames, write_pcap

    from netmon.sinks.evidence import host_masks

    hi, lo, mhi, mlo = (np.uint64(v) for v in host_masks(host))
    excerpt = Excerpt()
    kept: list[Frames] = []
    for item in inputs:
        path = Path(item["path"])
        upper = math.inf if item.get("live") else until  # kept after the last stored interval: still the host's
        if item.get("last") is not None and (item["last"] < since or item["first"] > until):
            continue
        if not path.exists():
            log.warning("replayed capture is gone; no packets from it", path=str(path))
            continue
        if not item.get("live"):
            excerpt.sources.append(str(path))
        try:
            for frames in read_frames(path):
                rows, index = decode_with_index(frames)
                src = ((rows["src_hi"] & mhi) == hi) & ((rows["src_lo"] & mlo) == lo)
                dst = ((rows["dst_hi"] & mhi) == hi) & ((rows["dst_lo"] & mlo) == lo)
                when = (rows["time"] >= since) & (rows["time"] <= upper)
                mine = (src | dst) & when
                if not mine.any():
                    continue
                requests = rows[src & when & np.isin(rows["mode"], (1, 3))]
                for (dhi, dlo), n in Counter(zip(requests["dst_hi"].tolist(), requests["dst_lo"].tolist())).items():
                    excerpt.servers[addr_text(dhi, dlo)] += n
                room = limit - excerpt.packets
                chosen = np.unique(index[mine])[:room]
                kept.append(_select(frames, chosen))
                excerpt.packets += len(chosen)
                if excerpt.packets >= limit:
                    excerpt.truncated = True
                    break
        except CaptureError as exc:
            log.warning("capture cut short; excerpt keeps what came before", error=str(exc))
        if excerpt.truncated:
            break
    if not kept:
        return excerpt
    frames = Frames(**{name: np.concatenate([getattr(f, name) for f in kept]) for name in
                       ("data", "caplen", "wirelen", "time", "linktype", "weight")},
                    offset=np.concatenate([f.offset + s for f, s in zip(kept, np.cumsum([0] + [len(f.data) for f in kept[:-1]]))]))
    kinds, counts = np.unique(frames.linktype, return_counts=True)
    main = kinds[np.argmax(counts)]
    if len(kinds) > 1:
        keep = np.flatnonzero(frames.linktype == main)
        excerpt.skipped_other_linktypes = len(frames) - len(keep)
        frames = _select(frames, keep)
    order = np.argsort(frames.time, kind="stable")
    write_pcap(out, _select(frames, order), int(main))
    excerpt.path = out
    return excerpt


@dataclass
class Report:
    markdown: Path
    html: Path
    plot: Path
    pcap: Path | None
    evidence: Evidence
    pdf: Path | None = None


def write_report(db: str | Path, host: str, out_dir: str | Path, since: str | None = None,
                 packets: Path | None = None, pdf: bool = False) -> Report:
    """Write report.html (self-contained), report.md, rate.png and excerpt.pcap for ``host``
    into ``out_dir``; report.pdf too when ``pdf``. ``packets``: a pcap the live collector kept
    for this host (its ring), used when no replayed capture covers the period."""
    from netmon.report.page import content, plot_png, print_pdf, render_html, render_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with StoreReader(db) as reader:
        evidence = gather(reader, host, since)
        inputs = reader.inputs()
    if packets is not None:
        inputs = [*inputs, {"path": str(packets), "first": None, "last": None, "live": True}]
    evidence.excerpt = cut_pcap(inputs, host, evidence.since, evidence.until, out / "excerpt.pcap")
    png = plot_png(evidence)
    plot = out / "rate.png"
    plot.write_bytes(png)
    pcap = evidence.excerpt.path.name if evidence.excerpt.path else None
    text = content(evidence, pcap)
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(text, plot.name))
    page.write_text(render_html(text, png, pcap))
    report = Report(md, page, plot, evidence.excerpt.path, evidence)
    if pdf:
        report.pdf = out / "report.pdf"
        print_pdf(page, report.pdf)
    return report
