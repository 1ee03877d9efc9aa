"""NetFlow v9 (RFC 3954): a 20-byte header, then template, options template and data flowsets.

Header: version, count, sysUptime (ms), unix_secs, package sequence (one per
export datagram, so a gap counts lost datagrams), source ID. Options template
scope fields (system, interface, ...) are not information elements: they are
read under a private marker so no scope type is mistaken for a counter.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from netmon import health
from netmon.sources.netflow.layout import FieldSpec, sets
from netmon.sources.netflow.templates import Context

if TYPE_CHECKING:
    from netmon.sources.netflow.collector import Collector

HEADER = struct.Struct("!HHIIII")
_PAIR = struct.Struct("!HH")
_OPTIONS = struct.Struct("!HHH")
#: Enterprise marker for v9 scope fields: matches no role.
SCOPE = -1


def parse(collector: "Collector", data: bytes, exporter: str) -> None:
    if len(data) < HEADER.size:
        health.count("decode.skip.truncated")
        return
    _, _, uptime, secs, sequence, source_id = HEADER.unpack_from(data)
    domain = (exporter, 9, source_id)
    ctx = Context(exporter, domain, float(secs), uptime)
    collector.sequence(domain, sequence, 1, "datagrams")
    for set_id, start, end in sets(data, HEADER.size, len(data)):
        if set_id == 0:
            _templates(collector, ctx, data, start, end)
        elif set_id == 1:
            _options_templates(collector, ctx, data, start, end)
        elif set_id >= 256:
            collector.data(ctx, set_id, data, start, end)
        else:
            health.count("decode.skip.reserved_set")


def _fields(data: bytes, pos: int, count: int, pen: int) -> tuple[FieldSpec, ...]:
    return tuple((t, pen, n) for t, n in (_PAIR.unpack_from(data, pos + 4 * i) for i in range(count)))


def _templates(collector: "Collector", ctx: Context, data: bytes, pos: int, end: int) -> None:
    while pos + 4 <= end:
        template_id, count = _PAIR.unpack_from(data, pos)
        if template_id < 256 or pos + 4 + 4 * count > end:
            health.count("decode.skip.template_malformed")
            return
        collector.template(ctx, template_id, _fields(data, pos + 4, count, 0))
        pos += 4 + 4 * count


def _options_templates(collector: "Collector", ctx: Context, data: bytes, pos: int, end: int) -> None:
    while pos + 6 <= end:
        template_id, scope_len, option_len = _OPTIONS.unpack_from(data, pos)
        if template_id < 256 or scope_len % 4 or option_len % 4 or pos + 6 + scope_len + option_len > end:
            health.count("decode.skip.template_malformed")
            return
        scope = _fields(data, pos + 6, scope_len // 4, SCOPE)
        options = _fields(data, pos + 6 + scope_len, option_len // 4, 0)
        collector.template(ctx, template_id, scope + options, len(scope), options=True)
        pos += 6 + scope_len + option_len
        if end - pos < 6:
            return
