"""The per-host evidence report: what a security team attaches to its answer to an abuse email.

``write_report(db, host, out_dir)`` reads the embedded store (helper B's
:class:`~netmon.sinks.store.StoreReader`) and writes, in ``out_dir``:

* ``report.md`` and ``report.html`` (every stored or packet-derived string escaped),
* ``rate.png``: requests sent and replies received per second over time, and KoD
  received / requests after KoD per interval (matplotlib, Agg backend),
* ``excerpt.pcap``: the host's UDP/123 packets in the report's time range, cut
  from the pcap files the store recorded as replayed (``inputs``), when the
  source was packets and the files are still there.

Times are UNIX seconds (event time) in code and UTC in the report.
"""

from __future__ import annotations

import html
import ipaddress
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from netmon.batch import SEVERITIES, Frames, addr_text
from netmon.sinks.alerts.text import markdown
from netmon.sinks.store import StoreReader

log = structlog.get_logger(__name__)

KOD_COLUMNS = ("kod_rate", "kod_deny", "kod_rstr", "kod_other", "after_kod")
MAX_PACKETS = 100_000


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
    """Everything the report says about one host between ``since`` and ``until``."""

    host: str
    since: float
    until: float
    intervals: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    excerpt: Excerpt = field(default_factory=Excerpt)

    def series(self, name: str) -> np.ndarray:
        return np.array([_num(row.get(name)) for row in self.intervals], dtype=np.float64)

    def per_second(self, name: str) -> np.ndarray:
        length = np.array([max(row["end"] - row["start"], 1e-9) for row in self.intervals])
        return self.series(name) / length

    def instance_estimate(self) -> dict[str, float]:
        """Estimated client instances (independent poll schedules): latest, median, peak."""
        values = self.series("instances")
        known = values[~np.isnan(values)]
        if not len(known):
            return {}
        return {"latest": float(known[-1]), "median": float(np.median(known)), "peak": float(known.max())}

    def kod_timeline(self) -> list[dict[str, Any]]:
        """Intervals in which KoD arrived or requests went on after one."""
        return [row for row in self.intervals if any(_num(row.get(c)) > 0 for c in KOD_COLUMNS)]

    def top_servers(self, n: int = 10) -> list[tuple[str, float]]:
        """Servers by requests: from the packets when there are any, else from the findings."""
        if self.excerpt.servers:
            return self.excerpt.servers.most_common(n)
        counts: Counter = Counter(f["server"] for f in self.findings if f.get("server"))
        return counts.most_common(n)


def _num(value: Any) -> float:
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
    """The host's intervals and findings from the store (all, or from ``since`` on)."""
    intervals = reader.host_intervals(host)
    if not intervals:
        raise LookupError(f"host {host} has no intervals in the store {reader.path}")
    last = max(row["end"] for row in intervals)
    start = parse_since(since, last) if since else min(row["start"] for row in intervals)
    intervals = [row for row in intervals if row["end"] > start]
    findings = [f for f in reader.host_findings(host) if f["end"] > start]
    return Evidence(host=host, since=start, until=last, intervals=intervals, findings=findings)


def _host_masks(host: str) -> tuple[int, int, int, int]:
    """(hi, lo, hi mask, lo mask) of a host address or prefix key, in the OBS_DTYPE address form."""
    net = ipaddress.ip_network(host, strict=False)
    if net.version == 4:
        net = ipaddress.ip_network(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
    value, bits = int(net.network_address), net.prefixlen
    mask = ((1 << 128) - 1) ^ ((1 << (128 - bits)) - 1)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF, mask >> 64, mask & 0xFFFF_FFFF_FFFF_FFFF


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
    """Write the host's UDP/123 packets between ``since`` and ``until`` from the recorded inputs."""
    from netmon.decode.frames import decode_with_index
    from netmon.sources.pcapfile import CaptureError, read_frames, write_pcap

    hi, lo, mhi, mlo = (np.uint64(v) for v in _host_masks(host))
    excerpt = Excerpt()
    kept: list[Frames] = []
    for item in inputs:
        path = Path(item["path"])
        if item.get("last") is not None and (item["last"] < since or item["first"] > until):
            continue
        if not path.exists():
            log.warning("replayed capture is gone; no packets from it", path=str(path))
            continue
        excerpt.sources.append(str(path))
        try:
            for frames in read_frames(path):
                rows, index = decode_with_index(frames)
                src = ((rows["src_hi"] & mhi) == hi) & ((rows["src_lo"] & mlo) == lo)
                dst = ((rows["dst_hi"] & mhi) == hi) & ((rows["dst_lo"] & mlo) == lo)
                when = (rows["time"] >= since) & (rows["time"] <= until)
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


def plot_rate(evidence: Evidence, path: Path) -> None:
    """rate.png: requests out and replies in per second; KoD received and requests after KoD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [datetime.fromtimestamp(row["start"], timezone.utc) for row in evidence.intervals]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(2, 1))
    top.plot(times, evidence.per_second("requests_out"), label="requests sent /s", color="tab:red")
    top.plot(times, evidence.per_second("replies_in"), label="replies received /s", color="tab:blue")
    top.set_ylabel("packets per second")
    top.set_ylim(bottom=0)
    top.set_title(f"NTP (UDP/123) of {evidence.host}")
    top.legend(loc="upper left")
    kod = np.nansum([evidence.series(c) for c in KOD_COLUMNS[:4]], axis=0)
    width = 0.8 * min((r["end"] - r["start"] for r in evidence.intervals), default=60.0) / 86400.0  # days
    bottom.bar(times, kod, width=width, align="edge", label="KoD received", color="tab:orange")
    bottom.plot(times, evidence.series("after_kod"), label="requests after KoD", color="tab:purple")
    bottom.set_ylabel("packets per interval")
    bottom.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _summary_rows(ev: Evidence) -> list[tuple[str, str]]:
    rate = ev.per_second("requests_out")
    inst = ev.instance_estimate()
    rows = [
        ("Host", ev.host),
        ("Group", str(ev.intervals[-1].get("grp") or "")),
        ("Period", f"{utc(ev.since)} to {utc(ev.until)}"),
        ("Intervals", str(len(ev.intervals))),
        ("Requests sent", f"{np.nansum(ev.series('requests_out')):.0f} (peak {np.nanmax(rate):.3g}/s, "
                          f"latest {rate[-1]:.3g}/s)"),
        ("Replies received", f"{np.nansum(ev.series('replies_in')):.0f}"),
        ("KoD received", f"{np.nansum([ev.series(c) for c in KOD_COLUMNS[:4]]):.0f}; "
                         f"requests after KoD: {np.nansum(ev.series('after_kod')):.0f}"),
    ]
    if inst:
        rows.append(("Client instances (est.)", f"latest {inst['latest']:.0f}, median {inst['median']:.0f}, peak {inst['peak']:.0f}"))
    return rows


def _kod_rows(ev: Evidence) -> list[list[str]]:
    return [[utc(r["start"]), *(f"{_num(r.get(c)):.0f}" for c in KOD_COLUMNS)] for r in ev.kod_timeline()]


FINDING_HEAD = ["detector", "first", "last", "intervals", "severity", "worst score", "servers", "worst explanation"]


def _finding_rows(ev: Evidence) -> list[list[str]]:
    """One row per detector: when it first and last fired, how often, and its worst explanation."""
    by_detector: dict[str, list[dict[str, Any]]] = {}
    for f in ev.findings:
        by_detector.setdefault(f["detector"], []).append(f)
    rows = []
    for detector, items in sorted(by_detector.items(), key=lambda kv: -max(f["score"] or 0 for f in kv[1])):
        worst = max(items, key=lambda f: (SEVERITIES.index(f["severity"]) if f["severity"] in SEVERITIES else 0, f["score"] or 0))
        servers = sorted({f["server"] for f in items if f.get("server")})
        rows.append([detector, utc(items[0]["start"]), utc(items[-1]["end"]), str(len(items)), worst["severity"] or "",
                     f"{worst['score'] or 0:.3g}", ", ".join(servers), worst["explanation"] or ""])
    return rows


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(markdown(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(markdown(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(ev: Evidence, plot: str, pcap: str | None) -> str:
    parts = [
        f"# NTP evidence for {markdown(ev.host)}",
        "",
        "Produced by netmon from UDP/123 traffic seen at the campus edge.",
        "",
        _md_table(["", ""], [list(r) for r in _summary_rows(ev)]),
        "",
        "## Request rate over time",
        "",
        f"![request rate]({plot})",
        "",
        "## Top servers",
        "",
        _md_table(["server", "requests"], [[s, f"{n:.0f}"] for s, n in ev.top_servers()]) if ev.top_servers() else "none recorded",
        "",
        "## Kiss-o'-Death timeline",
        "",
        _md_table(["interval", *KOD_COLUMNS], _kod_rows(ev)) if ev.kod_timeline() else "no KoD received",
        "",
        "## Findings",
        "",
        _md_table(FINDING_HEAD, _finding_rows(ev))
        if ev.findings else "no findings",
        "",
        "## Packets",
        "",
        _packets_text(ev, pcap, markdown),
        "",
    ]
    return "\n".join(parts)


def _packets_text(ev: Evidence, pcap: str | None, escape) -> str:
    x = ev.excerpt
    if pcap is None:
        return escape("No packet excerpt: the source was not a replayed capture, or the files are gone.")
    note = f" (first {x.packets} only)" if x.truncated else ""
    if x.skipped_other_linktypes:
        note += f"; {x.skipped_other_linktypes} packets of another link type left out (one pcap holds one)"
    return escape(f"{x.packets} packets{note} in {pcap}, cut from: {', '.join(x.sources)}")


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    esc = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


def render_html(ev: Evidence, plot: str, pcap: str | None) -> str:
    esc = html.escape
    top = ev.top_servers()
    body = [
        f"<h1>NTP evidence for {esc(ev.host)}</h1>",
        "<p>Produced by netmon from UDP/123 traffic seen at the campus edge.</p>",
        _html_table(["", ""], [list(r) for r in _summary_rows(ev)]),
        "<h2>Request rate over time</h2>",
        f'<img src="{esc(plot)}" alt="request rate over time">',
        "<h2>Top servers</h2>",
        _html_table(["server", "requests"], [[s, f"{n:.0f}"] for s, n in top]) if top else "<p>none recorded</p>",
        "<h2>Kiss-o'-Death timeline</h2>",
        _html_table(["interval", *KOD_COLUMNS], _kod_rows(ev)) if ev.kod_timeline() else "<p>no KoD received</p>",
        "<h2>Findings</h2>",
        _html_table(FINDING_HEAD, _finding_rows(ev))
        if ev.findings else "<p>no findings</p>",
        "<h2>Packets</h2>",
        f"<p>{_packets_text(ev, pcap, esc)}</p>",
    ]
    style = "body{font-family:sans-serif;max-width:60em;margin:auto}td,th{border:1px solid #ccc;padding:2px 6px}table{border-collapse:collapse}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>NTP evidence for {esc(ev.host)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


@dataclass
class Report:
    markdown: Path
    html: Path
    plot: Path
    pcap: Path | None
    evidence: Evidence


def write_report(db: str | Path, host: str, out_dir: str | Path, since: str | None = None) -> Report:
    """Write report.md, report.html, rate.png and excerpt.pcap for ``host`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with StoreReader(db) as reader:
        evidence = gather(reader, host, since)
        inputs = reader.inputs()
    evidence.excerpt = cut_pcap(inputs, host, evidence.since, evidence.until, out / "excerpt.pcap")
    plot = out / "rate.png"
    plot_rate(evidence, plot)
    pcap = evidence.excerpt.path.name if evidence.excerpt.path else None
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(evidence, plot.name, pcap))
    page.write_text(render_html(evidence, plot.name, pcap))
    return Report(md, page, plot, evidence.excerpt.path, evidence)
