"""NetFlow v5, v7 and legacy v1: a fixed header and fixed-size records, decoded as a fixed template.

v5 header: version, count, sysUptime (ms), unix_secs, unix_nsecs, flow_sequence
(flows exported so far, so a gap counts lost records), engine type/id and the
sampling interval (low 14 bits; top 2 bits the mode). v7 (Catalyst switches) has
the v5 header with the engine and sampling bytes reserved, and 52-byte records
(v5's plus a flags word and the router shortcut address). v1 has only the first
five header fields and a slightly different record; some old exporters still send it.

Validation is strict, as tshark's: the version's own record count must be between
1 and its maximum and the datagram exactly header + count x record size, so a
datagram of other traffic that starts with 0x0001 or 0x0005 (a STUN request, a
QUIC packet) is refused whole.

v5 is by far the most common fixed layout, so a batch of v5 datagrams can also be
parsed at once (:func:`parse_batch`): the headers become one numpy table and the
records one byte string, with no Python work per datagram beyond a slice.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from netmon.sources.netflow.export import Export, FixedRecords, Invalid
from netmon.sources.netflow.layout import Template, compile_template
from netmon.sources.netflow.templates import Context

HEADER = struct.Struct("!HHIIIIBBH")
#: HEADER as a numpy record, for a batch of headers at once.
HEADER_DTYPE = np.dtype([("version", ">u2"), ("count", ">u2"), ("uptime", ">u4"), ("secs", ">u4"), ("nsecs", ">u4"),
                         ("sequence", ">u4"), ("engine_type", "u1"), ("engine_id", "u1"), ("sampling", ">u2")])
V1_HEADER = struct.Struct("!HHIII")
V7_HEADER = struct.Struct("!HHIIIII")
RECORD_LEN = 48
V7_RECORD_LEN = 52
#: IPFIX IE 210 (paddingOctets): bytes netmon does not read.
_PAD = 210

#: The v5 record as IPFIX elements so it shares the template decoder.
TEMPLATE = compile_template(
    0,
    (
        (8, 0, 4), (12, 0, 4), (15, 0, 4), (10, 0, 2), (14, 0, 2), (2, 0, 4), (1, 0, 4),
        (22, 0, 4), (21, 0, 4), (7, 0, 2), (11, 0, 2), (_PAD, 0, 1), (6, 0, 1), (4, 0, 1),
        (5, 0, 1), (16, 0, 2), (17, 0, 2), (9, 0, 1), (13, 0, 1), (_PAD, 0, 2),
    ),
)
V1_TEMPLATE = compile_template(
    0,
    (
        (8, 0, 4), (12, 0, 4), (15, 0, 4), (10, 0, 2), (14, 0, 2), (2, 0, 4), (1, 0, 4),
        (22, 0, 4), (21, 0, 4), (7, 0, 2), (11, 0, 2), (_PAD, 0, 2), (4, 0, 1), (5, 0, 1),
        (6, 0, 1), (_PAD, 0, 7),
    ),
)
#: v7: v5's record with the pad byte as flags, a 2-byte flags word and router_sc (IPv4) at the end.
V7_TEMPLATE = compile_template(
    0,
    (
        (8, 0, 4), (12, 0, 4), (15, 0, 4), (10, 0, 2), (14, 0, 2), (2, 0, 4), (1, 0, 4),
        (22, 0, 4), (21, 0, 4), (7, 0, 2), (11, 0, 2), (_PAD, 0, 1), (6, 0, 1), (4, 0, 1),
        (5, 0, 1), (16, 0, 2), (17, 0, 2), (9, 0, 1), (13, 0, 1), (_PAD, 0, 2), (_PAD, 0, 4),
    ),
)


@dataclass(frozen=True)
class Layout:
    """One fixed-record version: header size, record template and size, most records a datagram holds."""

    version: int
    header: int
    template: Template
    record_len: int
    max_count: int


V1 = Layout(1, V1_HEADER.size, V1_TEMPLATE, RECORD_LEN, 24)
V5 = Layout(5, HEADER.size, TEMPLATE, RECORD_LEN, 30)
V7 = Layout(7, V7_HEADER.size, V7_TEMPLATE, V7_RECORD_LEN, 28)
assert TEMPLATE.record_len == V1_TEMPLATE.record_len == RECORD_LEN and V7_TEMPLATE.record_len == V7_RECORD_LEN


def _count(layout: Layout, data: bytes) -> int:
    """The header's record count, checked against the datagram's length; raises Invalid."""
    if len(data) < layout.header:
        raise Invalid("truncated")
    count = int.from_bytes(data[2:4], "big")
    if not 1 <= count <= layout.max_count:
        raise Invalid("export_count")
    if len(data) != layout.header + count * layout.record_len:
        raise Invalid("export_length")
    return count


def parse(data: bytes, exporter: str) -> list[Export]:
    """A NetFlow v5 datagram; raises :class:`Invalid`."""
    count = _count(V5, data)
    _, _, uptime, secs, nsecs, sequence, engine_type, engine_id, sampling = HEADER.unpack_from(data)
    domain = (exporter, 5, engine_type << 8 | engine_id)
    ctx = Context(exporter, domain, secs + nsecs / 1e9, uptime, sampling & 0x3FFF)
    return [Export(ctx, sequence, "records", count, [FixedRecords(TEMPLATE, HEADER.size, len(data))])]


def parse_v7(data: bytes, exporter: str) -> list[Export]:
    """A NetFlow v7 datagram; raises :class:`Invalid`."""
    count = _count(V7, data)
    _, _, uptime, secs, nsecs, sequence, _ = V7_HEADER.unpack_from(data)
    ctx = Context(exporter, (exporter, 7, 0), secs + nsecs / 1e9, uptime)
    return [Export(ctx, sequence, "records", count, [FixedRecords(V7_TEMPLATE, V7_HEADER.size, len(data))])]


def parse_v1(data: bytes, exporter: str) -> list[Export]:
    """A NetFlow v1 datagram (no sequence number); raises :class:`Invalid`."""
    _count(V1, data)
    _, _, uptime, secs, nsecs = V1_HEADER.unpack_from(data)
    ctx = Context(exporter, (exporter, 1, 0), secs + nsecs / 1e9, uptime)
    return [Export(ctx, None, "records", None, [FixedRecords(V1_TEMPLATE, V1_HEADER.size, len(data))])]


@dataclass(frozen=True)
class Batch:
    """The v5 datagrams of a batch that :func:`parse` would accept, parsed at once.

    ``index``: their positions in the batch; ``header``: their headers (:data:`HEADER_DTYPE`);
    ``records``: their records back to back (:data:`TEMPLATE`); ``skipped``: how many
    datagrams each reason refused (the reasons :func:`parse` raises).
    """

    index: np.ndarray
    header: np.ndarray
    records: bytes
    skipped: dict[str, int]


def parse_batch(payloads: list[bytes | memoryview]) -> Batch:
    """Datagrams that start with version 5, validated as :func:`parse` validates each one."""
    sizes = np.fromiter(map(len, payloads), np.int64, len(payloads))
    whole = np.flatnonzero(sizes >= HEADER.size)
    header = np.frombuffer(b"".join([payloads[i][: HEADER.size] for i in whole.tolist()]), HEADER_DTYPE)
    count = header["count"].astype(np.int64)
    sane_count = (count >= 1) & (count <= V5.max_count)
    sane_length = sizes[whole] == HEADER.size + count * RECORD_LEN
    ok = sane_count & sane_length
    index = whole[ok]
    records = b"".join([memoryview(payloads[i])[HEADER.size :] for i in index.tolist()])
    skipped = {"truncated": len(payloads) - len(whole), "export_count": int(np.count_nonzero(~sane_count)),
               "export_length": int(np.count_nonzero(sane_count & ~sane_length))}
    return Batch(index, header[ok], records, skipped)
