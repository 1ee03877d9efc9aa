"""NetFlow v5 (and legacy v1): a fixed header and fixed 48-byte records, decoded as a fixed template.

v5 header: version, count, sysUptime (ms), unix_secs, unix_nsecs, flow_sequence
(flows exported so far, so a gap counts lost records), engine type/id and the
sampling interval (low 14 bits; top 2 bits the mode). v1 has only the first five
and a slightly different record; some old exporters still send it.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from netmon import health
from netmon.sources.netflow.layout import compile_template
from netmon.sources.netflow.templates import Context

if TYPE_CHECKING:
    from netmon.sources.netflow.collector import Collector

HEADER = struct.Struct("!HHIIIIBBH")
RECORD_LEN = 48

#: The v5 record as IPFIX elements (210 = padding) so it shares the template decoder.
TEMPLATE = compile_template(
    0,
    (
        (8, 0, 4), (12, 0, 4), (15, 0, 4), (10, 0, 2), (14, 0, 2), (2, 0, 4), (1, 0, 4),
        (22, 0, 4), (21, 0, 4), (7, 0, 2), (11, 0, 2), (210, 0, 1), (6, 0, 1), (4, 0, 1),
        (5, 0, 1), (16, 0, 2), (17, 0, 2), (9, 0, 1), (13, 0, 1), (210, 0, 2),
    ),
)
V1_HEADER = struct.Struct("!HHIII")
V1_TEMPLATE = compile_template(
    0,
    (
        (8, 0, 4), (12, 0, 4), (15, 0, 4), (10, 0, 2), (14, 0, 2), (2, 0, 4), (1, 0, 4),
        (22, 0, 4), (21, 0, 4), (7, 0, 2), (11, 0, 2), (210, 0, 2), (4, 0, 1), (5, 0, 1),
        (6, 0, 1), (210, 0, 7),
    ),
)
assert TEMPLATE.record_len == V1_TEMPLATE.record_len == RECORD_LEN


def parse(collector: "Collector", data: bytes, exporter: str) -> None:
    if len(data) < HEADER.size:
        health.count("decode.skip.truncated")
        return
    _, count, uptime, secs, nsecs, sequence, engine_type, engine_id, sampling = HEADER.unpack_from(data)
    fits = (len(data) - HEADER.size) // RECORD_LEN
    if count > fits:
        health.count("decode.skip.truncated")
        count = fits
    domain = (exporter, 5, engine_type << 8 | engine_id)
    ctx = Context(exporter, domain, secs + nsecs / 1e9, uptime, sampling & 0x3FFF)
    collector.sequence(domain, sequence, count, "records")
    collector.records(ctx, TEMPLATE, data, HEADER.size, HEADER.size + count * RECORD_LEN)


def parse_v1(collector: "Collector", data: bytes, exporter: str) -> None:
    if len(data) < V1_HEADER.size:
        health.count("decode.skip.truncated")
        return
    _, count, uptime, secs, nsecs = V1_HEADER.unpack_from(data)
    fits = (len(data) - V1_HEADER.size) // RECORD_LEN
    if count > fits:
        health.count("decode.skip.truncated")
        count = fits
    ctx = Context(exporter, (exporter, 1, 0), secs + nsecs / 1e9, uptime)
    collector.records(ctx, V1_TEMPLATE, data, V1_HEADER.size, V1_HEADER.size + count * RECORD_LEN)
