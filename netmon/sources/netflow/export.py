"""What a wire-version parser makes of one export datagram, for the collector to apply.

Data flows one way: ``v5`` / ``v9`` / ``ipfix`` read bytes and return an
:class:`Export` (header context, sequence number, and the datagram's sets in
order) or raise :class:`Invalid`; only the :class:`~netmon.sources.netflow.collector.Collector`
holds state and applies them. A parser that finds any length, count, version or
template that disagrees with the datagram raises, so the whole datagram is one
counted skip (``decode.skip.<reason>``) and ordinary UDP that reaches an export
port (QUIC, STUN, DNS...) never yields a record.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from netmon.sources.netflow.layout import FieldSpec, Template
from netmon.sources.netflow.templates import Context


class Invalid(ValueError):
    """Not a well-formed export datagram of its version; ``reason`` names the skip counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TemplateRecord(NamedTuple):
    """A (options) template announced in the datagram."""

    template_id: int
    fields: tuple[FieldSpec, ...]
    scope_count: int = 0
    options: bool = False


class Withdrawal(NamedTuple):
    """IPFIX template withdrawal: one template id, or (None) every data / options template of the domain."""

    template_id: int | None
    options: bool


class DataSet(NamedTuple):
    """A data set's body, ``data[start:end]``, laid out by template ``template_id`` of the domain."""

    template_id: int
    start: int
    end: int


class FixedRecords(NamedTuple):
    """Records of a fixed layout (NetFlow v1/v5/v7), ``data[start:end]``."""

    template: Template
    start: int
    end: int


Item = TemplateRecord | Withdrawal | DataSet | FixedRecords


@dataclass(slots=True)
class Export:
    """One parsed export datagram.

    ``sequence``/``unit``: the header sequence number and what it counts
    ("records" or "datagrams"); ``increment`` how far this datagram moves it
    (None: the number of data records decoded, known only once templates are applied).
    """

    context: Context
    sequence: int | None
    unit: str
    increment: int | None
    items: list[Item] = field(default_factory=list)


_SET = struct.Struct("!HH")


def sets(data: bytes, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(set id, body start, body end) of each v9 flowset / IPFIX set in ``data[offset:end]``.

    The sets must fill the datagram: a set shorter than its own header or running
    past the end raises :class:`Invalid`; after the last set only zero bytes may
    remain (exporters pad datagrams: Cisco ACI with an empty set, Palo Alto to a
    fixed size).
    """
    while offset + 4 <= end:
        set_id, length = _SET.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            if any(data[offset:end]):
                raise Invalid("set_length")
            return
        yield set_id, offset + 4, offset + length
        offset += length
    if any(data[offset:end]):
        raise Invalid("set_length")
