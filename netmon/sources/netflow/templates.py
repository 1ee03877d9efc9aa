"""Templates per exporter and observation domain, and data sets waiting for theirs.

RFC 3954 (v9) and RFC 7011 (IPFIX) scope a template id to one exporter and one
source ID / observation domain; a new template with the same id replaces the old
one, and IPFIX may withdraw one (field count 0) or all of a set's kind. Both
stores are bounded, so a template flood or a stream of orphan data sets costs a
counted eviction, never unbounded memory. Each exporter also has its own quota
(``max_per_exporter``): an exporter past it loses its own least recently announced
template, never another exporter's, so one flooding exporter cannot evict the
templates of the others.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from netmon import health
from netmon.sources.netflow.layout import Template

#: (exporter address text, export version, source ID / observation domain id).
Domain = tuple[str, int, int]


class Context(NamedTuple):
    """What a data set needs from its datagram header.

    ``export`` UNIX seconds; ``uptime`` exporter sysUptime in ms (-1 for IPFIX,
    which has none); ``header_rate`` the v5 header's sampling interval (0 = none).
    """

    exporter: str
    domain: Domain
    export: float
    uptime: int
    header_rate: int = 0



@dataclass
class Pending:
    """A data set held back until its template arrives: the set body and its context."""

    body: bytes
    context: Context


class TemplateCache:
    """Templates by (domain, template id), least recently announced evicted first."""

    def __init__(self, max_templates: int = 65536, max_pending: int = 4096, max_pending_bytes: int = 8 << 20,
                 max_per_exporter: int = 4096) -> None:
        self.max_templates = max_templates
        self.max_per_exporter = max_per_exporter
        self._own: dict[str, OrderedDict[tuple[Domain, int], None]] = {}
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._templates: OrderedDict[tuple[Domain, int], Template] = OrderedDict()
        self._pending: OrderedDict[int, tuple[tuple[Domain, int], Pending]] = OrderedDict()
        self._waiting: dict[tuple[Domain, int], list[int]] = {}
        self._pending_bytes = 0
        self._serial = 0

    def __len__(self) -> int:
        return len(self._templates)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def get(self, domain: Domain, template_id: int) -> Template | None:
        return self._templates.get((domain, template_id))

    def put(self, domain: Domain, template: Template) -> list[Pending]:
        """Store (or refresh) a template; returns the held data sets it releases."""
        key = (domain, template.template_id)
        self._templates.pop(key, None)
        self._templates[key] = template
        own = self._own.setdefault(domain[0], OrderedDict())
        own.pop(key, None)
        own[key] = None
        health.count("source.netflow.templates")
        while len(own) > self.max_per_exporter:
            self._remove(next(iter(own)))
            health.count("decode.skip.template_evicted")
            health.count("decode.skip.template_quota")
        while len(self._templates) > self.max_templates:
            self._remove(next(iter(self._templates)))
            health.count("decode.skip.template_evicted")
        out = []
        for serial in self._waiting.pop(key, ()):
            if serial in self._pending:
                _, item = self._pending.pop(serial)
                self._pending_bytes -= len(item.body)
                out.append(item)
        return out

    def _remove(self, key: tuple[Domain, int]) -> None:
        self._templates.pop(key, None)
        own = self._own.get(key[0][0])
        if own is not None:
            own.pop(key, None)
            if not own:
                del self._own[key[0][0]]

    def touch(self, domain: Domain, template_id: int) -> None:
        """Mark a template as just announced again (it is evicted last)."""
        key = (domain, template_id)
        self._templates.move_to_end(key)
        self._own[domain[0]].move_to_end(key)

    def withdraw(self, domain: Domain, template_id: int | None, options: bool) -> None:
        """Forget one template, or with ``template_id`` None every data (or options) template of the domain."""
        if template_id is not None:
            self._remove((domain, template_id))
            return
        for key in [k for k, t in self._templates.items() if k[0] == domain and t.options == options]:
            self._remove(key)

    def exporters(self) -> int:
        """Exporters that have templates stored."""
        return len(self._own)

    def hold(self, domain: Domain, template_id: int, item: Pending) -> None:
        """Keep a data set whose template has not arrived; the oldest go when full."""
        if len(item.body) > self.max_pending_bytes:
            health.count("decode.skip.pending_dropped")
            return
        self._serial += 1
        key = (domain, template_id)
        self._pending[self._serial] = (key, item)
        self._waiting.setdefault(key, []).append(self._serial)
        self._pending_bytes += len(item.body)
        health.count("source.netflow.pending")
        while len(self._pending) > self.max_pending or self._pending_bytes > self.max_pending_bytes:
            serial, (old_key, old) = self._pending.popitem(last=False)
            self._pending_bytes -= len(old.body)
            waiting = self._waiting.get(old_key, [])
            if serial in waiting:
                waiting.remove(serial)
            if not waiting:
                self._waiting.pop(old_key, None)
            health.count("decode.skip.pending_dropped")
