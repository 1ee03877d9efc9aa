"""Alert text for people, and escaping for every medium it lands in.

Host names, server addresses and explanations may carry packet-derived bytes (a
reference ID, a hostile sender's choice of anything): nothing reaches Markdown,
Slack mrkdwn, HTML or a mail header without passing through one of these.
"""

from __future__ import annotations

import html
import re

from netmon.sinks.alerts.model import Alert, iso

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_MARKDOWN = re.compile(r"([\\`*_\[\]#|<>~&@:])")


def plain(text: str) -> str:
    """Text with control characters (NUL, ESC, CR...) replaced, newlines kept."""
    return _CONTROL.sub("\ufffd", str(text))


def one_line(text: str) -> str:
    """Plain text on one line (for subjects, syslog messages, headers)."""
    return plain(str(text).replace("\r", " ").replace("\n", " "))


def markdown(text: str) -> str:
    """Markdown (CommonMark, Mattermost, Teams) that shows ``text`` literally."""
    return _MARKDOWN.sub(r"\\\1", one_line(text))


def slack(text: str) -> str:
    """Slack mrkdwn that shows ``text`` literally: Slack only honours &, < and > escapes,
    so formatting characters are broken with a zero-width space."""
    escaped = one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([*_~`])", "\u200b\\1\u200b", escaped)


def html_text(text: str) -> str:
    """HTML that shows ``text`` literally."""
    return html.escape(plain(text), quote=True)


def evidence_lines(alert: Alert) -> list[str]:
    """One short line per evidence feature: ``name: value (baseline b)``."""
    lines = []
    for name, item in sorted(alert.evidence.items()):
        if isinstance(item, dict):
            value, base = item.get("value"), item.get("baseline")
            lines.append(f"{name}: {_num(value)}" + (f" (baseline {_num(base)})" if base is not None else ""))
        else:
            lines.append(f"{name}: {_num(item)}")
    return lines


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def phone_body(alert: Alert) -> str:
    """A plain-text body that reads well on a phone: short lines, most important first."""
    lines = [
        alert.summary,
        "",
        plain(alert.explanation),
        "",
        f"Host: {alert.hosts_shown(20)}",
        f"Group: {alert.group}",
        f"Rule: {alert.rule}",
        f"Severity: {alert.severity} (score {alert.score:.3g})",
    ]
    if alert.server:
        lines.append(f"Server: {alert.server}")
    lines.append(f"Since: {iso(alert.starts_at)}")
    if alert.ends_at is not None:
        lines.append(f"Ended: {iso(alert.ends_at)}")
    evidence = evidence_lines(alert)
    if evidence:
        lines += ["", "Evidence:", *(f"- {line}" for line in evidence)]
    if alert.evidence_url:
        lines += ["", f"Report: {alert.evidence_url}"]
    if alert.muzzle_command:
        lines += ["", "To muzzle it:", alert.muzzle_command]
    lines += ["", f"Alert id: {alert.id}"]
    return "\n".join(one_line(line) if line else "" for line in lines) + "\n"
