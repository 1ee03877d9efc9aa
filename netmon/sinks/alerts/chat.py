"""Chat payloads: Slack, Mattermost and Microsoft Teams (Adaptive Card) incoming webhooks.

Each kind formats the alert for its client and POSTs it with the generic webhook's
transport. Every packet-derived string is escaped for the client's markup (Slack
mrkdwn, Markdown), so a hostile host name cannot add links, mentions or formatting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from netmon.sinks.alerts import text
from netmon.sinks.alerts.hook import HookConfig, url_reach_problems
from netmon.sinks.alerts.model import Alert, iso
from netmon.sinks.alerts.webhook import post_json

COLOURS = {"resolved": "#2eb67d", "critical": "#e01e5a", "warning": "#ecb22e", "info": "#36c5f0"}


class Config(HookConfig):
    kind: Literal["slack", "mattermost", "teams"]
    url: str = Field(..., description="the channel's incoming-webhook URL")
    headers: dict[str, str] = Field(default_factory=dict)


def _colour(alert: Alert) -> str:
    return COLOURS["resolved"] if alert.event == "resolved" else COLOURS.get(alert.severity, COLOURS["info"])


def _facts(alert: Alert) -> list[tuple[str, str]]:
    facts = [("Host", alert.hosts_shown(20)), ("Group", alert.group), ("Rule", alert.rule), ("Severity", alert.severity)]
    if alert.server:
        facts.append(("Server", alert.server))
    facts.append(("Since", iso(alert.starts_at)))
    facts += [(name, value) for name, _, value in (line.partition(": ") for line in text.evidence_lines(alert))]
    if alert.muzzle_command:
        facts.append(("Muzzle", alert.muzzle_command))
    return facts


def slack_payload(alert: Alert) -> dict[str, Any]:
    lines = [f"*{text.slack(alert.summary)}*", text.slack(alert.explanation)]
    lines += [f"{text.slack(k)}: `{text.slack(v)}`" for k, v in _facts(alert)]
    if alert.evidence_url:
        lines.append(f"<{text.slack(alert.evidence_url)}|evidence report>")
    return {"text": text.slack(alert.summary), "attachments": [{"color": _colour(alert), "text": "\n".join(lines)}]}


def mattermost_payload(alert: Alert) -> dict[str, Any]:
    lines = [f"**{text.markdown(alert.summary)}**", text.markdown(alert.explanation), ""]
    lines += ["| | |", "|---|---|", *(f"| {text.markdown(k)} | {text.markdown(v)} |" for k, v in _facts(alert))]
    if alert.evidence_url:
        lines.append(f"\n[evidence report](<{text.markdown(alert.evidence_url)}>)")
    return {"username": "netmon", "text": "\n".join(lines)}


def teams_payload(alert: Alert) -> dict[str, Any]:
    """An Adaptive Card message, as Teams Workflows ("post to a channel when a webhook
    request is received") and the older incoming-webhook connectors accept."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": text.markdown(alert.summary), "weight": "Bolder", "wrap": True,
         "color": "Good" if alert.event == "resolved" else "Attention" if alert.severity == "critical" else "Warning"},
        {"type": "TextBlock", "text": text.markdown(alert.explanation), "wrap": True},
        {"type": "FactSet", "facts": [{"title": text.markdown(k), "value": text.markdown(v)} for k, v in _facts(alert)]},
    ]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if alert.evidence_url.startswith(("http://", "https://")):
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Evidence report", "url": alert.evidence_url}]
    return {
        "type": "message",
        "summary": text.one_line(alert.summary),
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
    }


PAYLOADS: dict[str, Callable[[Alert], dict[str, Any]]] = {
    "slack": slack_payload,
    "mattermost": mattermost_payload,
    "teams": teams_payload,
}


def build(config: Config) -> Callable[[Alert], None]:
    payload = PAYLOADS[config.kind]

    def deliver(alert: Alert) -> None:
        post_json(config.url, payload(alert), config.timeout, config.headers)

    return deliver


def check(config: Config) -> list[str]:
    return url_reach_problems(config.url)
