"""A partition's alerts: its own lifecycles, carried in its checkpoint, so a takeover tells what one owner would.

A scorer runs the config's alerts sinks once per process (their hooks' queues, retries
and health), but each partition it owns steps its own :class:`~netmon.sinks.alerts.
lifecycle.Lifecycle` (one per alerts sink), in the scorer's thread as each interval is
scored. Its state goes into the partition's checkpoint with the models, so the next owner
knows which alerts are open and told, and what it scores again past the checkpoint makes
the same notifications, which the hooks' ledger (:meth:`AlertsSink.dedupe`) skips when
the former owner sent them. The notifications of the last ``retry_for`` seconds go into
the checkpoint too: one the former owner queued but never delivered (its hook down, or
the process killed first) is queued again by the next owner, and skipped if it was sent.

Left open, as a hook reads the ledger before it delivers and records after: a process
killed between a hook's delivery and its record in the ledger (one request to NATS) has
it sent again by the next owner; and one the former owner's hook is still retrying (a
handover while the hook is down) is sent twice if both scorers deliver it at one moment.
"""

from __future__ import annotations

import time
from typing import Any

from netmon.batch import Scored
from netmon.sinks.alerts import AlertsSink
from netmon.sinks.alerts.lifecycle import alert_data, alert_from
from netmon.sinks.alerts.model import Alert


class PartitionAlerts:
    """The lifecycles of one partition, one per alerts sink, and its recent notifications."""

    def __init__(self, sinks: list[AlertsSink]) -> None:
        self.sinks = sinks
        self.lifecycles = [sink.new_lifecycle() for sink in sinks]
        #: seconds a notification is kept to queue again at a takeover (the sinks' longest retry)
        self.keep = max((sink.config.retry_for for sink in sinks), default=0.0)
        self.recent: list[tuple[float, int, Alert]] = []  # (UNIX s queued, sink index, notification)

    def write(self, scored: Scored) -> None:
        """Step every lifecycle with one scored interval of the partition; queue its notifications."""
        now = time.time()
        for index, (sink, lifecycle) in enumerate(zip(self.sinks, self.lifecycles)):
            self.recent += [(now, index, alert) for alert in sink.write(scored, lifecycle)]

    def state(self) -> dict[str, Any]:
        cutoff = time.time() - self.keep
        self.recent = [item for item in self.recent if item[0] >= cutoff]
        return {"lifecycles": [lifecycle.state() for lifecycle in self.lifecycles],
                "recent": [{"at": at, "sink": index, "alert": alert_data(alert)} for at, index, alert in self.recent]}

    def load(self, state: dict[str, Any]) -> None:
        """Take up the former owner's lifecycles; queue its recent notifications again (each
        hook skips those its ledger says were sent)."""
        for lifecycle, data in zip(self.lifecycles, state.get("lifecycles", [])):
            lifecycle.load(data)
        self.recent = [(float(item["at"]), int(item["sink"]), alert_from(item["alert"]))
                       for item in state.get("recent", []) if 0 <= int(item["sink"]) < len(self.sinks)]
        for _, index, alert in self.recent:
            self.sinks[index].notify(alert)
