"""The alerts sink: findings -> lifecycle -> one managed queue per hook -> people and systems.

``[[sinks]] type = "alerts"`` with ``[[sinks.hooks]]`` tables, each with a ``kind``:
``webhook``, ``slack``, ``mattermost``, ``teams``, ``alertmanager``, ``exec``,
``syslog`` or ``email``. ``write`` runs the lifecycle for one interval and hands the
notifications to the hooks; it never waits for a hook. A hook only encodes and sends one
alert; the runtime's :class:`~netmon.runtime.sinks.ManagedSink` gives each hook (and the
automatic muzzle) what it gives every sink: a queue bounded in bytes (``hook_buffer``,
by default dropping the oldest alert when full), the one retry policy (``backoff``
doubling to ``backoff_max``, for up to ``retry_for`` seconds), a watchdog on a hanging
delivery, isolation, and health ``alerts.hook.<name>.{written,errors,retried,expired,
dropped,hung,lost,queue_bytes,queue_items}``.

    [[sinks]]
    type = "alerts"
    min_severity = "warning"
    resolve_after = 3            # intervals without a finding
    cooldown = 900               # seconds between notifications of one host and rule
    storm_hosts = 20             # this many new hosts on one rule -> one grouped alert
    evidence_url = "https://netmon.example.edu/evidence/{host}/report.html"
    [[sinks.hooks]]
    kind = "webhook"
    url = "https://soc.example.edu/hooks/netmon"
    secret = "..."
    [[sinks.allowlist]]
    host = "10.0.0.5"
    reason = "campus stratum-1 server"
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, Union

import structlog
from pydantic import Field

from netmon import health
from netmon.act import muzzle as muzzle_action
from netmon.batch import Scored
from netmon.config import Buffer, Settings, SinkOptions, load
from netmon.paths import data_path
from netmon.retry import Backoff, Retry
from netmon.runtime.sinks import ManagedSink
from netmon.sinks.alerts import alertmanager, chat, command, email_hook, syslog, webhook
from netmon.sinks.alerts.lifecycle import Lifecycle, rank
from netmon.sinks.alerts.model import Alert, host_slug
from netmon.sinks.alerts.silences import RuleConfig, Silences

log = structlog.get_logger(__name__)

HOOKS = {
    "webhook": webhook,
    "slack": chat,
    "mattermost": chat,
    "teams": chat,
    "alertmanager": alertmanager,
    "exec": command,
    "syslog": syslog,
    "email": email_hook,
}

HookTable = Annotated[
    Union[webhook.Config, chat.Config, alertmanager.Config, command.Config, syslog.Config, email_hook.Config],
    Field(discriminator="kind"),
]

#: seconds an automatic muzzle (an nftables or eBPF map update) may take before it is abandoned
MUZZLE_HANG_TIMEOUT = 60.0


def default_silences() -> str:
    """Where `netmon silence` writes and the alerts sink reads silences without a configured
    path: silences.json in the data directory (:func:`netmon.paths.data_dir`), so the command
    run from any directory edits the file the service reads."""
    return data_path("silences.json")


class Config(SinkOptions):
    type: Literal["alerts"]
    min_severity: Literal["info", "warning", "critical"] = Field("warning", description="ignore findings below this")
    resolve_after: int = Field(3, ge=1, description="intervals in a row without a finding before an alert resolves")
    cooldown: float = Field(900.0, ge=0, description="seconds between notifications of one host and rule")
    escalate_ratio: float = Field(2.0, gt=1, description="score this many times the last one told is worth an update")
    storm_hosts: int = Field(20, ge=2, description="new hosts on one rule in one interval that make one grouped alert")
    evidence_url: str = Field("", description="link to the evidence report; {host} becomes the host's file-safe name")
    silences_file: str = Field(default_factory=default_silences,
                               description="silences written by `netmon silence` (default: silences.json in the data directory)")
    state_file: str = Field("", description="open alerts kept across restarts, e.g. netmon-data/alerts-state.json; empty = none")
    silences: list[RuleConfig] = Field(default_factory=list)
    allowlist: list[RuleConfig] = Field(default_factory=list)
    hook_buffer: Buffer = Field(default_factory=lambda: Buffer(max_bytes=4 << 20, when_full="drop_oldest"),
                                description="each hook's queue, bytes (an estimate: about 1-3 KB an alert), "
                                            "and what to drop when it is full")
    backoff: float = Field(1.0, gt=0, description="seconds before the first retry; doubles each time")
    backoff_max: float = Field(60.0, gt=0)
    retry_for: float = Field(3600.0, gt=0, description="seconds an alert is retried before it is given up")
    close_timeout: float = Field(10.0, ge=0, description="seconds to deliver queued alerts at shutdown")
    hooks: list[HookTable] = Field(default_factory=list)
    muzzle: muzzle_action.Config = muzzle_action.Config()


def hook_name(hook: Any, index: int) -> str:
    return hook.name or f"{hook.kind}{index}"


def named_hooks(config: Config) -> list[Any]:
    """Hook configs with their names filled in."""
    return [h.model_copy(update={"name": hook_name(h, i)}) for i, h in enumerate(config.hooks)]


class AlertsSink:
    """See the module docstring."""

    def __init__(self, config: Config, campus: Sequence[str] = ()) -> None:
        """``campus``: the ``[campus] internal`` prefixes, the only hosts the automatic muzzle may hold."""
        self.config = config
        rules = [r.rule("silence") for r in config.silences] + [r.rule("allow") for r in config.allowlist]
        self.silences = Silences(rules, Path(config.silences_file) if config.silences_file else None)
        self.lifecycle = self.new_lifecycle()
        self.state_path = Path(config.state_file) if config.state_file else None
        if self.state_path is not None and self.state_path.exists():
            try:
                self.lifecycle.load(json.loads(self.state_path.read_text()))
            except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:  # edited by hand
                self.lifecycle = self.new_lifecycle()  # nothing half-loaded
                health.count("alerts.state.unreadable")
                log.error("alert state unreadable; starting without open alerts", path=str(self.state_path), error=str(exc))
        self.ledger: Ledger | None = None
        sends = [(hook, HOOKS[hook.kind].build(hook)) for hook in named_hooks(config)]  # all built before any thread
        self.hooks = [(hook, self._managed(hook.name, send, 2 * hook.timeout + 5)) for hook, send in sends]
        self.muzzler = (self._managed("muzzle", _auto_muzzle(config.muzzle, campus), MUZZLE_HANG_TIMEOUT)
                        if config.muzzle.auto_rules else None)

    def new_lifecycle(self) -> Lifecycle:
        """A lifecycle with no open alert, of this sink's settings (a scorer keeps one per partition)."""
        config = self.config
        return Lifecycle(resolve_after=config.resolve_after, cooldown=config.cooldown,
                         escalate_ratio=config.escalate_ratio, storm_hosts=config.storm_hosts,
                         evidence_url=self.evidence_url)

    def _managed(self, name: str, send: Callable[[Alert], None], hang_timeout: float) -> ManagedSink:
        """One hook's ``send`` behind the runtime's queue, retry policy and watchdog."""
        retry = Retry(Backoff(self.config.backoff, max(self.config.backoff, self.config.backoff_max)),
                      self.config.retry_for)
        return ManagedSink(name, lambda: Delivery(self._once(name, send)), self.config.hook_buffer, size=alert_bytes,
                           retry=retry, hang_timeout=hang_timeout, prefix=f"alerts.hook.{name}")

    def dedupe(self, ledger: Ledger) -> None:
        """From now on, skip a notification ``ledger`` says this hook already sent, and record in
        it each one sent (scorers: a takeover re-scores what the former owner may have told)."""
        self.ledger = ledger

    def _once(self, hook: str, send: Callable[[Alert], None]) -> Callable[[Alert], None]:
        """``send``, skipping what the ledger (when set) says hook ``hook`` sent. A notification is
        recorded once its hook took it, so one process dying between the two may send it twice."""
        def deliver(alert: Alert) -> None:
            ledger = self.ledger
            if ledger is None:
                send(alert)
                return
            key = notification_key(hook, alert)
            if ledger.sent(key):
                health.count(f"alerts.hook.{hook}.already_sent")
                return
            send(alert)
            try:
                ledger.mark(key)
            except Exception as exc:  # noqa: BLE001 - sent: retrying would send it again
                health.count("alerts.ledger.errors")
                log.warning("sent notification not recorded; a takeover may send it again", hook=hook,
                            id=alert.id, error=type(exc).__name__)

        return deliver

    def evidence_url(self, host: str) -> str:
        return self.config.evidence_url.replace("{host}", host_slug(host))

    def write(self, scored: Scored, lifecycle: Lifecycle | None = None) -> list[Alert]:
        """Run one interval through the lifecycle (this sink's, or ``lifecycle``: a partition's)
        and queue its notifications, which it returns (never blocks)."""
        floor = rank(self.config.min_severity)
        findings = []
        for finding in scored.findings:
            if rank(finding.severity) < floor:
                continue
            rule = self.silences.match(finding.host, finding.server)
            if rule is not None:
                health.count(f"alerts.{'allowed' if rule.kind == 'allow' else 'silenced'}")
                continue
            findings.append(finding)
        alerts = (lifecycle or self.lifecycle).step(findings, scored.intervals.end)
        for alert in alerts:
            self.notify(alert)
        return alerts

    def notify(self, alert: Alert) -> None:
        health.count(f"alerts.{alert.event}")
        log.info("alert", change=alert.event, host=alert.host, rule=alert.rule, severity=alert.severity, id=alert.id)
        for hook, queue in self.hooks:
            if hook.min_severity and alert.event != "resolved" and rank(alert.severity) < rank(hook.min_severity):
                continue
            queue.put(alert)
        if self.muzzler is not None and self.config.muzzle.wants(alert.event, alert.rule, alert.severity) and not alert.grouped:
            self.muzzler.put(alert)

    def queues(self) -> list[ManagedSink]:
        return [queue for _, queue in self.hooks] + ([self.muzzler] if self.muzzler else [])

    def drain(self, timeout: float) -> bool:
        """Wait until every hook's queue is empty (tests, shutdown)."""
        return all(queue.drain(timeout) for queue in self.queues())

    def close(self) -> None:
        for queue in self.queues():
            queue.close(self.config.close_timeout)
        if self.state_path is not None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.lifecycle.state()))
            tmp.replace(self.state_path)


class Ledger(Protocol):
    """Notifications sent, shared by the processes that may send one (scorers: the transport's)."""

    def sent(self, key: str) -> bool: ...

    def mark(self, key: str) -> None: ...


def notification_key(hook: str, alert: Alert) -> str:
    """One notification of one hook, the same in every process that makes it (event time only)."""
    text = f"{hook}\0{alert.id}\0{alert.event}\0{alert.updated_at!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class Delivery:
    """A hook's ``send(alert)`` as the sink a :class:`ManagedSink` drives (nothing to close)."""

    def __init__(self, send: Callable[[Alert], None]) -> None:
        self.write = send

    def close(self) -> None:
        pass


def alert_bytes(alert: Alert) -> int:
    """Estimated memory one queued alert holds, bytes (its strings and evidence)."""
    text = len(alert.explanation) + sum(len(h) for h in alert.hosts) + len(alert.evidence_url)
    return 1000 + text + 100 * len(alert.evidence)


def _auto_muzzle(config: muzzle_action.Config, campus: Sequence[str]) -> Callable[[Alert], None]:
    """Delivery for the automatic muzzle: like a hook, queued and retried off the collection path."""

    def deliver(alert: Alert) -> None:
        muzzle_action.Muzzle(config, campus).add(alert.host, reason=f"alert {alert.id}: {alert.rule} {alert.severity}")

    return deliver


def configured(path: str | None) -> Config:
    """The alerts sink table of the config at ``path`` (defaults when none names one).

    Commands (``netmon silence``, ``netmon muzzle``) read their settings from it;
    ConfigError names what is wrong with the file."""
    if path:
        for table in load(path).sinks:
            if table.type == "alerts":
                return table
    return Config(type="alerts")


def build(config: Config, settings: Settings | None = None) -> AlertsSink:
    return AlertsSink(config, settings.campus.internal if settings is not None else ())


def check(config: Config) -> list[str]:
    """Every reason a hook cannot deliver (malformed URL, missing program, bad SMTP)."""
    problems = []
    for hook in named_hooks(config):
        problems += [f"hook {hook.name} ({hook.kind}): {p}" for p in HOOKS[hook.kind].check(hook)]
    return problems
