"""The alert record every hook receives, and its versioned JSON form.

One :class:`Alert` stands for one host and rule (or, for a storm, one rule over many
hosts) from the first finding until it resolves. Each notification carries the
``event`` that caused it: ``firing`` (new), ``updated`` (worse than last told) or
``resolved``. Times are UNIX seconds in event time (the packets' own clock), so a
replay produces the same alerts every time. The JSON schema is
``netmon/sinks/alerts/schema.json`` (version :data:`SCHEMA_VERSION`).
"""

from __future__ import annotations

import hashlib
import math
import shlex
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

SCHEMA_VERSION = "netmon.alert/1"

Event = Literal["firing", "updated", "resolved"]


@dataclass(frozen=True)
class Alert:
    """One notification about one alert (see the module docstring for the fields' units).

    ``hosts`` lists every host of a grouped storm alert (``host`` is then ``"*"``);
    ``evidence`` maps feature name to ``{"value": v, "baseline": b}``.
    """

    id: str
    event: Event
    escalated: bool
    host: str
    hosts: tuple[str, ...]
    group: str
    rule: str
    severity: str
    server: str
    score: float
    explanation: str
    evidence: dict[str, Any]
    starts_at: float
    updated_at: float
    ends_at: float | None = None
    evidence_url: str = ""

    @property
    def status(self) -> str:
        """``resolved`` once the alert ended, else ``firing``."""
        return "resolved" if self.event == "resolved" else "firing"

    @property
    def grouped(self) -> bool:
        return self.host == "*"

    @property
    def summary(self) -> str:
        """One plain line: who, what, how bad (not escaped: hooks escape for their medium)."""
        if self.grouped:
            who = f"{len(self.hosts)} hosts ({self.hosts_shown(5)})"
        else:
            who = f"host {self.host}"
        state = "RESOLVED" if self.event == "resolved" else ("ESCALATED" if self.escalated else self.event.upper())
        return f"[{state}] {self.severity}: {who}: {self.rule}"

    def hosts_shown(self, limit: int) -> str:
        """The first ``limit`` hosts, comma-separated, and how many more there are."""
        more = len(self.hosts) - limit
        return ", ".join(self.hosts[:limit]) + (f" and {more} more" if more > 0 else "")

    @property
    def muzzle_command(self) -> str:
        """The one line an operator runs on the border box to muzzle this host (empty for storms)."""
        if self.grouped or self.event == "resolved":
            return ""
        return f"netmon muzzle add {shlex.quote(self.host)} --for 1h --reason {shlex.quote('alert ' + self.id)}"

    def with_event(self, event: Event, **changes: Any) -> "Alert":
        return replace(self, event=event, **changes)

    def to_json(self) -> dict[str, Any]:
        """The versioned webhook body (see schema.json)."""
        body = finite(asdict(self))
        body["hosts"] = list(self.hosts)
        body.update(
            version=SCHEMA_VERSION,
            status=self.status,
            summary=self.summary,
            muzzle_command=self.muzzle_command,
            starts_at_iso=iso(self.starts_at),
            updated_at_iso=iso(self.updated_at),
            ends_at_iso=iso(self.ends_at) if self.ends_at is not None else None,
        )
        return body


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return finite(value.item())
    return value


def alert_id(host: str, rule: str, starts_at: float) -> str:
    """A stable id for one alert: the same host, rule and start always give the same id."""
    return hashlib.sha256(f"{host}|{rule}|{starts_at:.3f}".encode()).hexdigest()[:16]


def iso(t: float) -> str:
    """RFC 3339 UTC time with milliseconds, e.g. ``2026-11-27T11:45:06.000Z``."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def host_slug(host: str) -> str:
    """A host key as a file-name and URL-safe word (``2001:db8::/64`` -> ``2001-db8--_64``)."""
    return "".join(c if c.isalnum() or c in ".-" else ("-" if c == ":" else "_") for c in host)
