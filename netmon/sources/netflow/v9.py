"""NetFlow v9 (RFC 3954): a 20-byte header, then template, options template and data flowsets.

Header: version, count, sysUptime (ms), unix_secs, package sequence (one per
export datagram, so a gap counts lost datagrams), source ID. Options template
scope fields (system, interface, ...) are not information elements: they are
read under a private marker so no scope type is mistaken for a counter.

Validation: the flowsets must fill the datagram (:func:`~netmon.sources.netflow.export.sets`)
and every template must be sane (id >= 256, at least one field, fields inside
their flowset, options lengths in whole field specifiers); otherwise the whole
datagram is refused (:class:`~netmon.sources.netflow.export.Invalid`).
"""

from __future__ import annotations

import struct

from netmon import health
from netmon.sources.netflow.export import DataSet, Export, Invalid, Item, TemplateRecord, sets
from netmon.sources.netflow.layout import FieldSpec
from netmon.sources.netflow.templates import Context

HEADER = struct.Struct("!HHIIII")
_PAIR = struct.Struct("!HH")
_OPTIONS = struct.Struct("!HHH")
#: Enterprise marker for v9 scope fields: matches no role.
SCOPE = -1


def parse(data: bytes, exporter: str) -> list[Export]:
    """A NetFlow v9 datagram; raises :class:`Invalid`."""
    if len(data) < HEADER.size:
        raise Invalid("truncated")
    _, _, uptime, secs, sequence, source_id = HEADER.unpack_from(data)
    ctx = Context(exporter, (exporter, 9, source_id), float(secs), uptime)
    items: list[Item] = []
    for set_id, start, end in sets(data, HEADER.size, len(data)):
        if set_id == 0:
            items += _templates(data, start, end)
        elif set_id == 1:
            items += _options_templates(data, start, end)
        elif set_id >= 256:
            items.append(DataSet(set_id, start, end))
        else:
            health.count("decode.skip.reserved_set")
    return [Export(ctx, sequence, "datagrams", 1, items)]


def _fields(data: bytes, pos: int, count: int, pen: int) -> tuple[FieldSpec, ...]:
    return tuple((t, pen, n) for t, n in (_PAIR.unpack_from(data, pos + 4 * i) for i in range(count)))


def _templates(data: bytes, pos: int, end: int) -> list[TemplateRecord]:
    out = []
    while pos + 4 <= end:
        template_id, count = _PAIR.unpack_from(data, pos)
        if template_id == count == 0 and not any(data[pos:end]):
            break  # zero padding to the set's end
        if template_id < 256 or count == 0 or pos + 4 + 4 * count > end:
            raise Invalid("template_malformed")
        out.append(TemplateRecord(template_id, _fields(data, pos + 4, count, 0)))
        pos += 4 + 4 * count
    return out


def _options_templates(data: bytes, pos: int, end: int) -> list[TemplateRecord]:
    out = []
    while pos + 6 <= end:
        template_id, scope_len, option_len = _OPTIONS.unpack_from(data, pos)
        if template_id == 0 and not any(data[pos:end]):
            break  # zero padding to the set's end
        if template_id < 256 or scope_len % 4 or option_len % 4 or not scope_len + option_len \
                or pos + 6 + scope_len + option_len > end:
            raise Invalid("template_malformed")
        scope = _fields(data, pos + 6, scope_len // 4, SCOPE)
        options = _fields(data, pos + 6 + scope_len, option_len // 4, 0)
        out.append(TemplateRecord(template_id, scope + options, len(scope), options=True))
        pos += 6 + scope_len + option_len
    return out
