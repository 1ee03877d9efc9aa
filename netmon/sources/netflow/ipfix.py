"""IPFIX (RFC 7011): a 16-byte header, then template (2), options template (3) and data sets.

Header: version 10, message length, export time (UNIX s), sequence (data records
sent so far in this observation domain, so a gap counts lost records),
observation domain id. Field specifiers with the enterprise bit carry a private
enterprise number (RFC 5103 reverse elements use 29305). A template record with
no fields withdraws its template; template id 2 (or 3) withdraws every data (or
options) template of the domain. Set id 0 (NetFlow v9's template set, reserved in
IPFIX) is read as a template set, as tshark and scapy do.

Validation: the message length must be the datagram's (or messages back to back
must fill it exactly), the sets must fill each message,
and every template must be sane (id >= 256, fields inside their set, scope count
no larger than the field count); otherwise the whole message is refused.

Template scope: RFC 7011 section 8 scopes templates to one transport session; over
UDP netmon (like nfcapd, pmacct and goflow2) keeps them per (exporter address,
observation domain) across sessions, so an exporter restart or a source-port
change does not throw away templates that still apply. They expire after
``template_lifetime`` seconds of export time without a new announcement.
"""

from __future__ import annotations

import struct

from netmon import health
from netmon.sources.netflow.export import DataSet, Export, Invalid, Item, TemplateRecord, Withdrawal, sets
from netmon.sources.netflow.layout import FieldSpec
from netmon.sources.netflow.templates import Context

HEADER = struct.Struct("!HHIII")
_PAIR = struct.Struct("!HH")
_PEN = struct.Struct("!I")
_OPTIONS = struct.Struct("!HHH")


def parse(data: bytes, exporter: str) -> list[Export]:
    """The IPFIX messages of a datagram; raises :class:`Invalid`. Each message's sequence
    moves by the data records decoded.

    A datagram normally holds one message whose length is the datagram's; several
    messages back to back (a capture of a stream, logstash's test files) are read
    when their lengths tile the datagram exactly.
    """
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < HEADER.size:
            raise Invalid("truncated")
        version, length, export, sequence, domain_id = HEADER.unpack_from(data, pos)
        if version != 10 or length < HEADER.size or pos + length > len(data):
            raise Invalid("export_length")
        ctx = Context(exporter, (exporter, 10, domain_id), float(export), -1)
        items: list[Item] = []
        for set_id, start, end in sets(data, pos + HEADER.size, pos + length):
            if set_id in (0, 2, 3):
                items += _templates(data, start, end, options=set_id == 3)
            elif set_id >= 256:
                items.append(DataSet(set_id, start, end))
            else:
                health.count("decode.skip.reserved_set")
        out.append(Export(ctx, sequence, "records", None, items))
        pos += length
    return out


def _fields(data: bytes, pos: int, count: int, end: int) -> tuple[tuple[FieldSpec, ...], int]:
    """``count`` field specifiers from ``pos``; raises Invalid when they run past ``end``."""
    out = []
    for _ in range(count):
        if pos + 4 > end:
            raise Invalid("template_malformed")
        ie, length = _PAIR.unpack_from(data, pos)
        pos += 4
        pen = 0
        if ie & 0x8000:
            if pos + 4 > end:
                raise Invalid("template_malformed")
            pen = _PEN.unpack_from(data, pos)[0]
            pos += 4
            ie &= 0x7FFF
        out.append((ie, pen, length))
    return tuple(out), pos


def _templates(data: bytes, pos: int, end: int, options: bool) -> list[TemplateRecord | Withdrawal]:
    head = 6 if options else 4
    out: list[TemplateRecord | Withdrawal] = []
    while pos + 4 <= end:
        template_id, count = _PAIR.unpack_from(data, pos)
        if template_id == count == 0 and not any(data[pos:end]):
            break  # zero padding to the set's end
        if count == 0:
            if template_id < 256 and template_id not in (2, 3):
                raise Invalid("template_malformed")
            out.append(Withdrawal(None if template_id in (2, 3) else template_id, options))
            pos += 4
            continue
        if pos + head > end:
            raise Invalid("template_malformed")
        scope = _OPTIONS.unpack_from(data, pos)[2] if options else 0
        if template_id < 256 or scope > count:
            raise Invalid("template_malformed")
        fields, pos = _fields(data, pos + head, count, end)
        out.append(TemplateRecord(template_id, fields, scope, options=options))
    return out
