"""The evidence report as a page: one self-contained HTML file (the plot inside as a
``data:`` PNG, no script, nothing fetched) and the same content in Markdown.

Order is what an abuse desk needs first: a plain-language summary, what was found,
the key figures with the time before the anomaly for contrast, the plot; then the
Kiss-o'-Death summary, servers and packets; model detail last, collapsed. Every
stored or packet-derived string is escaped for the medium. No local file path
appears: the packet excerpt is named by its file name beside the report.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from netmon.report import plain
from netmon.report.evidence import KOD_COLUMNS, Evidence, num, utc
from netmon.report.hosts import detector_summary
from netmon.report.listing import plural

#: Rows of the per-hour Kiss-o'-Death table (the latest hours); the totals cover all.
KOD_HOURS = 48
KOD_NAMES = {"kod_rate": "RATE (slow down)", "kod_deny": "DENY (stop)", "kod_rstr": "RSTR (stop)", "kod_other": "other"}


@dataclass
class Content:
    """What the report says, independent of HTML or Markdown."""

    title: str
    lead: str
    findings: list[tuple[str, str, str]] = field(default_factory=list)  # title, meaning, when
    facts: list[tuple[str, str]] = field(default_factory=list)
    kod: str = ""
    kod_table: tuple[list[str], list[list[str]]] = ([], [])
    servers: list[list[str]] = field(default_factory=list)
    packets: str = ""
    technical: tuple[list[str], list[list[str]]] = ([], [])


def _rate(per_second: float) -> str:
    if not math.isfinite(per_second):
        return "no data"
    if per_second >= 0.1:
        return f"{per_second:.2g} requests a second"
    return f"{per_second * 3600:.3g} requests an hour"


def lead(ev: Evidence) -> str:
    """One paragraph a reader can paste into an answer to an abuse email."""
    sent = float(np.nansum(ev.series("requests_out")))
    servers = len(ev.top_servers(1000)) or int(np.nanmax(ev.series("servers"), initial=0))
    text = (f"Between {utc(ev.since)} and {utc(ev.until)}, {ev.host} sent {plain.number(sent)} NTP (time) requests "
            f"to {plural(servers, 'server')}, on average {_rate(ev.mean_rate(ev.intervals))}. "
            "A normal NTP client sends one request every 64 to 1024 seconds.")
    inst = ev.estimate()
    if inst and inst["peak"] >= 2:
        text += f" Its timing shows about {inst['peak']:.0f} NTP programs running at once."
    kod = ev.kod_totals()
    received = sum(kod[c] for c in KOD_COLUMNS[:4])
    if received:
        text += f" Time servers answered with {plain.number(received)} Kiss-o'-Death packets asking it to slow down or stop"
        text += (f"; it sent {plain.number(kod['after_kod'])} requests after them anyway." if kod["after_kod"] > 0
                 else ".")  # chronyd piles: each copy obeys on its own port, and none is seen going on
    first = ev.first_finding
    if first is None:
        text += " netmon found nothing abnormal in this period."
    elif ev.before:
        text += f" Before {utc(first)} it sent {_rate(ev.mean_rate(ev.before))}."
    else:
        text += " It was already behaving this way when monitoring of it began."
    return text


def content(ev: Evidence, pcap: str | None) -> Content:
    summary = detector_summary(ev.findings)
    group = str(ev.intervals[-1].get("grp") or "")
    found = []
    for row in summary:
        when = f"{utc(row['first'])} to {utc(row['last'])}, in {plural(row['findings'], 'interval')}"
        found.append((plain.title(row["detector"]), plain.sentence(row["detector"], row["evidence"], group,
                                                                    row["explanation"]), when))
    rate = ev.per_second("requests_out")
    facts = [("Host", ev.host), ("Group", group or "-"), ("Period", f"{utc(ev.since)} to {utc(ev.until)}")]
    if ev.first_finding is not None:
        facts.append(("First flagged", utc(ev.first_finding)))
        facts.append(("Before that", _rate(ev.mean_rate(ev.before)) if ev.before else "no earlier traffic recorded"))
    flagged = {f["start"] for f in ev.findings}
    during = [row for row in ev.intervals if row["start"] in flagged]
    facts += [
        ("While flagged", _rate(ev.mean_rate(during)) if during else "-"),
        ("Busiest interval", _rate(float(np.nanmax(rate))) if len(rate) else "-"),
        ("Requests sent / replies received", f"{plain.number(float(np.nansum(ev.series('requests_out'))))} / "
                                             f"{plain.number(float(np.nansum(ev.series('replies_in'))))}"),
    ]
    for column, label in (
        ("instances", "NTP programs at once (from one interval's timing)"),
        ("server_clients_avg",
         "Concurrent clients to its busiest server (averaged over time; before the hosts view's KoD correction)"),
    ):
        if est := ev.estimate(column):
            facts.append((label, f"latest {est['latest']:.0f}, typical {est['median']:.0f}, most {est['peak']:.0f}"))
    kod = ev.kod_totals()
    received = sum(kod[c] for c in KOD_COLUMNS[:4])
    timeline = ev.kod_timeline()
    if received or kod["after_kod"]:
        kinds = ", ".join(f"{plain.number(kod[c])} {KOD_NAMES[c]}" for c in KOD_COLUMNS[:4] if kod[c])
        kod_text = (f"{plain.number(received)} Kiss-o'-Death packets received ({kinds or 'none'}) between "
                    f"{utc(timeline[0]['start'])} and {utc(timeline[-1]['end'])}; {plain.number(kod['after_kod'])} "
                    "requests sent after one.")
    else:
        kod_text = "No Kiss-o'-Death packets received."
    hours: dict[float, list[float]] = {}
    for row in timeline:
        sums = hours.setdefault(row["start"] // 3600 * 3600, [0.0] * len(KOD_COLUMNS))
        for i, c in enumerate(KOD_COLUMNS):
            sums[i] += 0.0 if math.isnan(num(row.get(c))) else float(row[c])
    kod_rows = [[utc(h), *(f"{v:.0f}" for v in sums)] for h, sums in sorted(hours.items())[-KOD_HOURS:]]
    technical = [[r["detector"], utc(r["first"]), utc(r["last"]), str(r["findings"]), r["severity"], f"{r['score']:.3g}",
                  r["servers"], r["explanation"]] for r in summary]
    return Content(
        title=f"NTP traffic report for {ev.host}",
        lead=lead(ev),
        findings=found,
        facts=facts,
        kod=kod_text,
        kod_table=(["hour (UTC)", *(KOD_NAMES.get(c, "requests after KoD") for c in KOD_COLUMNS)], kod_rows),
        servers=[[s, plain.number(n)] for s, n in ev.top_servers()],
        packets=_packets(ev, pcap),
        technical=(["detector", "first", "last", "intervals", "severity", "worst score", "servers", "explanation"],
                   technical),
    )


def _packets(ev: Evidence, pcap: str | None) -> str:
    x = ev.excerpt
    if pcap is None:
        return "No packet excerpt: the traffic came from flow records, or the captured packets are no longer kept."
    note = f" (the first {x.packets} only)" if x.truncated else ""
    if x.skipped_other_linktypes:
        note += f"; {x.skipped_other_linktypes} packets of another link type left out"
    origin = f"cut from {plural(len(x.sources), 'capture file')}" if x.sources else "kept by the live collector"
    return f"{x.packets} packets of this host's NTP traffic{note}, {origin}, in {pcap} beside this report (pcap format)."


def plot_png(ev: Evidence) -> bytes:
    """Requests sent and replies received per second (both lines visible when they are equal),
    the flagged time shaded, and KoD received / requests after KoD per interval, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ev.timeline()
    times = [datetime.fromtimestamp(row["start"], timezone.utc) for row in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, height_ratios=(2, 1))
    top.plot(times, ev.per_second("requests_out", rows), label="requests sent /s", color="tab:red", linewidth=4)
    top.plot(times, ev.per_second("replies_in", rows), label="replies received /s", color="tab:blue", linewidth=1.5,
             linestyle=(0, (4, 3)))
    first = ev.first_finding
    if first is not None:
        shade = datetime.fromtimestamp(first, timezone.utc)
        for axis in (top, bottom):
            axis.axvspan(shade, times[-1], color="tab:red", alpha=0.08, linewidth=0)
        top.axvline(shade, color="grey", linestyle=":", label="first flagged")
    top.set_ylabel("packets per second")
    top.set_ylim(bottom=0)
    top.set_title(f"NTP (UDP/123) of {ev.host}")
    top.legend(loc="upper left")
    kod = np.nansum([ev.series(c, rows) for c in KOD_COLUMNS[:4]], axis=0)
    width = 0.8 * min((r["end"] - r["start"] for r in rows), default=60.0) / 86400.0  # days
    bottom.bar(times, kod, width=width, align="edge", label="Kiss-o'-Death received", color="tab:orange")
    bottom.plot(times, ev.series("after_kod", rows), label="requests after Kiss-o'-Death", color="tab:purple")
    bottom.set_ylabel("per interval")
    bottom.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


STYLE = ("body{font-family:sans-serif;max-width:62em;margin:1em auto;padding:0 1em;line-height:1.4}"
         "h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1em 0 .3em}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}table{border-collapse:collapse}"
         "ol{padding-left:1.4em}li{margin:.3em 0}.when{color:#555;font-size:.9em}img{max-width:100%}"
         "details{margin:.8em 0}summary{cursor:pointer;font-weight:bold}")


def _html_table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    esc = html.escape
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if any(head):
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


def render_html(c: Content, png: bytes, pcap: str | None) -> str:
    """The report as one HTML file: nothing outside it is needed to read it (the plot is inline)."""
    esc = html.escape
    found = ("<ol>" + "".join(f"<li><b>{esc(t)}.</b> {esc(s)} <span class=\"when\">({esc(w)})</span></li>"
                              for t, s, w in c.findings) + "</ol>") if c.findings else "<p>No findings.</p>"
    image = base64.b64encode(png).decode("ascii")
    kod_head, kod_rows = c.kod_table
    packets = esc(c.packets)
    if pcap:
        packets = packets.replace(esc(pcap), f'<a href="{esc(pcap)}">{esc(pcap)}</a>', 1)
    body = [
        f"<h1>{esc(c.title)}</h1>",
        f'<p id="summary">{esc(c.lead)}</p>',
        '<h2 id="findings">What netmon found</h2>', found,
        "<h2>Key figures</h2>", _html_table(["", ""], [list(f) for f in c.facts], "facts"),
        "<h2>Requests over time</h2>",
        f'<img id="plot" src="data:image/png;base64,{image}" alt="requests sent and replies received per second '
        'over time; the flagged time is shaded">',
        "<h2>Kiss-o'-Death replies</h2>", f"<p>{esc(c.kod)}</p>",
        (f"<details><summary>Per hour (latest {len(kod_rows)} hours)</summary>{_html_table(kod_head, kod_rows)}</details>"
         if kod_rows else ""),
        "<h2>Servers asked</h2>",
        _html_table(["server", "requests"], c.servers) if c.servers else "<p>None recorded.</p>",
        "<h2>Packets</h2>", f"<p>{packets}</p>",
        "<details><summary>Technical details (for network engineers)</summary>",
        "<p>Each detector's strongest finding as netmon recorded it; scores are the detector's own scale.</p>",
        _html_table(*c.technical) if c.technical[1] else "<p>No findings.</p>", "</details>",
        "<p class=\"when\">Produced by netmon from UDP/123 traffic seen at the campus edge. Times are UTC.</p>",
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(c.title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(part for part in body if part) + "\n</body></html>\n")


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~])")


def md(text: str) -> str:
    """Markdown that shows ``text`` literally: only characters that format are escaped
    (times like 00:12:00 and addresses stay as they are), newlines become spaces."""
    from netmon.sinks.alerts.text import one_line

    return _MD_SPECIAL.sub(r"\\\1", one_line(text))


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md(h) for h in head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows])


def render_markdown(c: Content, plot: str) -> str:
    """The same report in Markdown, the plot referenced as the PNG beside it."""
    found = "\n".join(f"{n}. **{md(t)}.** {md(s)} ({md(w)})" for n, (t, s, w) in enumerate(c.findings, 1))
    kod_head, kod_rows = c.kod_table
    parts = [
        f"# {md(c.title)}", md(c.lead),
        "## What netmon found", found or "No findings.",
        "## Key figures", _md_table(["", ""], [list(f) for f in c.facts]),
        "## Requests over time", f"![requests over time]({plot})",
        "## Kiss-o'-Death replies", md(c.kod),
        _md_table(kod_head, kod_rows) if kod_rows else "",
        "## Servers asked", _md_table(["server", "requests"], c.servers) if c.servers else "None recorded.",
        "## Packets", md(c.packets),
        "## Technical details", _md_table(*c.technical) if c.technical[1] else "No findings.",
        "Produced by netmon from UDP/123 traffic seen at the campus edge. Times are UTC.",
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def print_pdf(page: Path, pdf: Path, timeout: float = 120.0) -> None:
    """``page`` printed to ``pdf`` by headless Chromium (Debian's ``chromium``); the page
    fetches nothing, so the browser needs no network. RuntimeError says what failed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise RuntimeError("a PDF needs Chromium: apt-get install chromium (the HTML report is complete without it)")
    args = [browser, "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.resolve().as_uri()]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if not pdf.exists() or pdf.read_bytes()[:5] != b"%PDF-":
        raise RuntimeError(f"chromium wrote no PDF (exit {done.returncode}): {done.stderr.strip()[-300:]}")
