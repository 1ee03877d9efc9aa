"""Alert lifecycle: firing -> updated (when worse) -> resolved, one alert per host and rule.

Fed once per closed interval with that interval's findings (after silences), it says
which notifications to send. Everything runs in event time (interval ends, UNIX
seconds), so a replay notifies exactly as the live run would have.

* Deduplication: one alert per (host, rule); the worst finding of an interval counts.
* Escalation: a higher severity is told at once; a score ``escalate_ratio`` times the
  last one told is told once the cooldown has passed.
* Cooldown: no two firing/updated notifications for one host and rule within
  ``cooldown`` seconds (a flapping host that resolves and fires again waits).
* Resolve: after ``resolve_after`` intervals in a row without a finding.
* Storm: when ``storm_hosts`` or more hosts start firing one rule in one interval,
  they become one grouped alert (host ``"*"``) that resolves when its last host does;
  hosts that fire the same rule while the storm lasts join it quietly.

:meth:`Lifecycle.state` and :meth:`Lifecycle.load` carry all of this across a restart
or a config reload, so open alerts are not told again as new.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from netmon import health
from netmon.batch import SEVERITIES, Finding
from netmon.sinks.alerts.model import Alert, alert_id, finite

Key = tuple[str, str]


def rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


@dataclass
class _State:
    alert: Alert
    told: bool = False
    told_severity: str = ""
    told_score: float = 0.0
    last_seen: float = 0.0
    missing: int = 0
    storm: str = ""


@dataclass
class _Storm:
    alert: Alert
    members: set[Key] = field(default_factory=set)


class Lifecycle:
    """State of every open alert; :meth:`step` turns one interval's findings into notifications."""

    def __init__(
        self,
        resolve_after: int = 3,
        cooldown: float = 900.0,
        escalate_ratio: float = 2.0,
        storm_hosts: int = 20,
        evidence_url: Callable[[str], str] = lambda host: "",
    ) -> None:
        self.resolve_after = resolve_after
        self.cooldown = cooldown
        self.escalate_ratio = escalate_ratio
        self.storm_hosts = storm_hosts
        self.evidence_url = evidence_url
        self.open: dict[Key, _State] = {}
        self.storms: dict[str, _Storm] = {}
        self.last_told: dict[Key, float] = {}

    def step(self, findings: list[Finding], now: float) -> list[Alert]:
        """Notifications caused by the interval ending at ``now`` with these findings."""
        worst: dict[Key, Finding] = {}
        for f in findings:
            key = (f.host, f.detector)
            if key not in worst or (rank(f.severity), f.score) > (rank(worst[key].severity), worst[key].score):
                worst[key] = f
        out: list[Alert] = []
        fresh: dict[str, list[Key]] = defaultdict(list)
        for key, finding in worst.items():
            state = self.open.get(key)
            if state is None:
                state = self.open[key] = _State(alert=self._new(finding, now))
            else:
                state.alert = _refresh(state.alert, finding, now)
            state.missing, state.last_seen = 0, finding.end
            if state.storm:
                continue
            note = self._note(key, state, now)
            if note is not None and note.event == "firing":
                fresh[finding.detector].append(key)
            elif note is not None:
                out.append(note)
        out += self._storms(fresh, now)
        out += self._resolve(set(worst), now)
        self._forget(now)
        return out

    def _new(self, f: Finding, now: float) -> Alert:
        return Alert(
            id=alert_id(f.host, f.detector, f.start),
            event="firing",
            escalated=False,
            host=f.host,
            hosts=(f.host,),
            group=f.group,
            rule=f.detector,
            severity=f.severity,
            server=f.server,
            score=f.score,
            explanation=f.explanation,
            evidence=dict(f.evidence),
            starts_at=f.start,
            updated_at=now,
            evidence_url=self.evidence_url(f.host),
        )

    def _note(self, key: Key, state: _State, now: float) -> Alert | None:
        """The notification this still-firing state needs now, if any (and mark it told)."""
        alert = state.alert
        cooled = now - self.last_told.get(key, float("-inf")) >= self.cooldown
        if not state.told:
            if not cooled:
                health.count("alerts.cooldown.held")
                return None
            note = alert.with_event("firing")
        elif rank(alert.severity) > rank(state.told_severity):
            note = alert.with_event("updated", escalated=True)
        elif cooled and alert.score >= state.told_score * self.escalate_ratio > 0:
            note = alert.with_event("updated", escalated=True)
        else:
            return None
        state.told, state.told_severity, state.told_score = True, alert.severity, alert.score
        self.last_told[key] = now
        return note

    def _storms(self, fresh: dict[str, list[Key]], now: float) -> list[Alert]:
        out: list[Alert] = []
        for rule, keys in fresh.items():
            storm = self.storms.get(rule)
            if storm is None and len(keys) < self.storm_hosts:
                out += [self.open[k].alert for k in keys]
                continue
            members = [self.open[k] for k in keys]
            if storm is None:
                first = members[0].alert
                storm = self.storms[rule] = _Storm(
                    alert=first.with_event(
                        "firing",
                        id=alert_id("*", rule, now),
                        host="*",
                        hosts=(),
                        group=_common(m.alert.group for m in members),
                        server=_common(m.alert.server for m in members),
                        explanation=f"{len(keys)} hosts started to match {rule} in one interval; e.g. {first.host}: {first.explanation}",
                        starts_at=min(m.alert.starts_at for m in members),
                        evidence_url="",
                    )
                )
                health.count("alerts.storms")
            else:
                health.count("alerts.storm.joined", len(keys))
            storm.members.update(keys)
            for member in members:
                member.storm, member.told = rule, True
            worst = max(members, key=lambda m: (rank(m.alert.severity), m.alert.score)).alert
            storm.alert = storm.alert.with_event(
                storm.alert.event,
                hosts=tuple(sorted({k[0] for k in storm.members})),
                severity=max(storm.alert.severity, worst.severity, key=rank),
                score=max(storm.alert.score, worst.score),
                updated_at=now,
            )
            if storm.alert.event == "firing" and len(storm.members) == len(keys):
                out.append(storm.alert)
        return out

    def _resolve(self, seen: set[Key], now: float) -> list[Alert]:
        out: list[Alert] = []
        for key in [k for k in self.open if k not in seen]:
            state = self.open[key]
            state.missing += 1
            if state.missing < self.resolve_after:
                continue
            del self.open[key]
            if state.storm:
                storm = self.storms[state.storm]
                storm.members.discard(key)
                storm.alert = storm.alert.with_event(storm.alert.event, ends_at=max(storm.alert.ends_at or 0.0, state.last_seen))
                if not storm.members:
                    del self.storms[state.storm]
                    out.append(storm.alert.with_event("resolved", updated_at=now, escalated=False))
            elif state.told:
                out.append(state.alert.with_event("resolved", updated_at=now, ends_at=state.last_seen, escalated=False))
        return out

    def state(self) -> dict[str, Any]:
        """Open alerts, storms and cooldown memories as JSON-ready data (see :meth:`load`)."""
        return {
            "version": 1,
            "open": [{**asdict(st), "key": list(k), "alert": alert_data(st.alert)} for k, st in self.open.items()],
            "storms": [{"rule": r, "alert": alert_data(st.alert), "members": [list(m) for m in st.members]}
                       for r, st in self.storms.items()],
            "last_told": [[*k, t] for k, t in self.last_told.items()],
        }

    def load(self, data: dict[str, Any]) -> None:
        """Take up where a previous run (or a reloaded sink) left off."""
        for item in data.get("open", []):
            fields = {k: v for k, v in item.items() if k not in ("key", "alert")}
            self.open[(item["key"][0], item["key"][1])] = _State(alert=alert_from(item["alert"]), **fields)
        for item in data.get("storms", []):
            self.storms[item["rule"]] = _Storm(alert_from(item["alert"]), {(h, r) for h, r in item["members"]})
        self.last_told.update({(h, r): t for h, r, t in data.get("last_told", [])})

    def _forget(self, now: float) -> None:
        """Drop cooldown memories older than the cooldown (bounded state)."""
        if len(self.last_told) > 4 * len(self.open) + 1024:
            self.last_told = {k: t for k, t in self.last_told.items() if now - t < self.cooldown or k in self.open}


def _refresh(alert: Alert, f: Finding, now: float) -> Alert:
    return alert.with_event(
        alert.event,
        severity=f.severity,
        score=f.score,
        explanation=f.explanation,
        evidence=dict(f.evidence),
        server=f.server or alert.server,
        updated_at=now,
    )


def alert_data(alert: Alert) -> dict[str, Any]:
    """``alert`` as JSON-ready data (:func:`alert_from` reads it back)."""
    return finite(asdict(alert))


def alert_from(data: dict[str, Any]) -> Alert:
    return Alert(**{**data, "hosts": tuple(data["hosts"])})


def _common(values) -> str:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else "mixed"
