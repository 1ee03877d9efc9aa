"""IPFIX (RFC 7011): a 16-byte header, then template (2), options template (3) and data sets.

Header: version 10, message length, export time (UNIX s), sequence (data records
sent so far in this observation domain, so a gap counts lost records),
observation domain id. Field specifiers with the enterprise bit carry a private
enterprise number (RFC 5103 reverse elements use 29305). A template record with
no fields withdraws its template; template id 2 (or 3) withdraws every data (or
options) template of the domain. Set id 0 (NetFlow v9's template set, reserved in
IPFIX) is read as a template set, as tshark and scapy do.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from netmon import health
from netmon.sources.netflow.layout import FieldSpec, sets
from netmon.sources.netflow.templates import Context

if TYPE_CHECKING:
    from netmon.sources.netflow.collector import Collector

HEADER = struct.Struct("!HHIII")
_PAIR = struct.Struct("!HH")
_PEN = struct.Struct("!I")
_OPTIONS = struct.Struct("!HHH")


def parse(collector: "Collector", data: bytes, exporter: str) -> None:
    if len(data) < HEADER.size:
        health.count("decode.skip.truncated")
        return
    _, length, export, sequence, domain_id = HEADER.unpack_from(data)
    if length != len(data):
        health.count("decode.skip.length_mismatch")
    domain = (exporter, 10, domain_id)
    ctx = Context(exporter, domain, float(export), -1)
    records: int | None = 0
    for set_id, start, end in sets(data, HEADER.size, len(data)):
        if set_id in (0, 2, 3):
            _templates(collector, ctx, data, start, end, options=set_id == 3)
        elif set_id >= 256:
            count = collector.data(ctx, set_id, data, start, end)
            records = None if count is None or records is None else records + count
        else:
            health.count("decode.skip.reserved_set")
    collector.sequence(domain, sequence, records, "records")


def _fields(data: bytes, pos: int, count: int, end: int) -> tuple[tuple[FieldSpec, ...], int]:
    """``count`` field specifiers from ``pos``; raises IndexError when they run past ``end``."""
    out = []
    for _ in range(count):
        if pos + 4 > end:
            raise IndexError("field specifier past set end")
        ie, length = _PAIR.unpack_from(data, pos)
        pos += 4
        pen = 0
        if ie & 0x8000:
            if pos + 4 > end:
                raise IndexError("enterprise number past set end")
            pen = _PEN.unpack_from(data, pos)[0]
            pos += 4
            ie &= 0x7FFF
        out.append((ie, pen, length))
    return tuple(out), pos


def _templates(collector: "Collector", ctx: Context, data: bytes, pos: int, end: int, options: bool) -> None:
    head = 6 if options else 4
    while pos + head <= end:
        template_id, count = _PAIR.unpack_from(data, pos)
        if count == 0:
            collector.templates.withdraw(ctx.domain, None if template_id in (2, 3) else template_id, options)
            health.count("source.netflow.withdrawn")
            pos += 4
            continue
        scope = _OPTIONS.unpack_from(data, pos)[2] if options else 0
        if template_id < 256 or scope > count:
            health.count("decode.skip.template_malformed")
            return
        try:
            fields, pos = _fields(data, pos + head, count, end)
        except IndexError:
            health.count("decode.skip.template_malformed")
            return
        collector.template(ctx, template_id, fields, scope, options=options)
