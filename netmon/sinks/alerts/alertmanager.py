"""Prometheus Alertmanager, API v2: POST /api/v2/alerts.

Labels: alertname (``netmon_`` and the rule, e.g. ``netmon_rule_kod_ignored``), host
(``*`` for a grouped storm), group, server, rule, severity, plus any ``labels`` from
config. Annotations: summary, explanation, evidence (the report link), hosts.
``startsAt`` is the first finding's time. A firing alert carries ``endsAt`` ``hold``
seconds ahead (wall clock) so Alertmanager keeps it while netmon is quiet about it
(cooldown) and lets it lapse if netmon dies; a resolved alert is the same labels with
``endsAt`` = when it ended, which Alertmanager takes as resolved.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from netmon.sinks.alerts import text
from netmon.sinks.alerts.hook import HookConfig, url_reach_problems
from netmon.sinks.alerts.model import Alert, iso
from netmon.sinks.alerts.webhook import post_json


class Config(HookConfig):
    kind: Literal["alertmanager"]
    url: str = Field(..., description="Alertmanager base URL, e.g. http://127.0.0.1:9093")
    hold: float = Field(3600.0, gt=0, description="seconds a firing alert stays firing in Alertmanager without news")
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels, e.g. {team = 'noc'}")
    headers: dict[str, str] = Field(default_factory=dict)


def alertname(rule: str) -> str:
    return "netmon_" + re.sub(r"[^A-Za-z0-9_]", "_", rule)


def payload(alert: Alert, config: Config, now: float) -> list[dict[str, Any]]:
    labels = {
        **config.labels,
        "alertname": alertname(alert.rule),
        "host": alert.host,
        "group": alert.group,
        "server": alert.server,
        "rule": alert.rule,
        "severity": alert.severity,
    }
    annotations = {
        "summary": text.one_line(alert.summary),
        "explanation": text.plain(alert.explanation),
        "evidence": alert.evidence_url,
        "hosts": " ".join(alert.hosts),
        "details": "\n".join(text.evidence_lines(alert)),
        "muzzle": alert.muzzle_command,
    }
    ends = alert.ends_at if alert.event == "resolved" and alert.ends_at is not None else max(now, alert.updated_at) + config.hold
    if alert.event == "resolved":
        ends = min(ends, now)
    item: dict[str, Any] = {
        "labels": {k: text.one_line(v) for k, v in labels.items() if v},
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": iso(min(alert.starts_at, ends - 0.001)),
        "endsAt": iso(ends),
    }
    if alert.evidence_url.startswith(("http://", "https://")):
        item["generatorURL"] = alert.evidence_url
    return [item]


def build(config: Config) -> Callable[[Alert], None]:
    endpoint = config.url.rstrip("/") + "/api/v2/alerts"

    def deliver(alert: Alert) -> None:
        post_json(endpoint, payload(alert, config, time.time()), config.timeout, config.headers)

    return deliver


def check(config: Config) -> list[str]:
    return url_reach_problems(config.url, "alertmanager url")
