"""The IPFIX / NetFlow v9 information elements netmon knows, read from ``fields.csv``.

The CSV holds (IE id, IANA name, abstract type, default length in bytes; 65535 =
variable length). NetFlow v9 field types 1-127 share the IPFIX numbering, so one
table serves both. ``ROLES`` maps the names netmon reads to the column they fill;
every other element is skipped by its length.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

#: Private enterprise number of RFC 5103 reverse information elements.
REVERSE_PEN = 29305


@dataclass(frozen=True)
class Element:
    """One information element: IANA id, name, abstract type, default length (bytes)."""

    ie: int
    name: str
    type: str
    length: int


def _load() -> dict[int, Element]:
    text = resources.files(__package__).joinpath("fields.csv").read_text()
    return {int(r["ie"]): Element(int(r["ie"]), r["name"], r["type"], int(r["length"])) for r in csv.DictReader(text.splitlines())}


ELEMENTS: dict[int, Element] = _load()

#: IANA name -> netmon column role. Times are kept per unit and resolved later.
_ROLE_BY_NAME: dict[str, str] = {
    "octetDeltaCount": "bytes",
    "octetTotalCount": "bytes_total",
    "packetDeltaCount": "packets",
    "packetTotalCount": "packets_total",
    "protocolIdentifier": "proto",
    "sourceTransportPort": "sport",
    "destinationTransportPort": "dport",
    "udpSourcePort": "sport_udp",
    "udpDestinationPort": "dport_udp",
    "sourceIPv4Address": "src4",
    "destinationIPv4Address": "dst4",
    "sourceIPv6Address": "src6",
    "destinationIPv6Address": "dst6",
    "vlanId": "vlan",
    "dot1qVlanId": "vlan_dot1q",
    "flowStartSysUpTime": "start_uptime",
    "flowEndSysUpTime": "end_uptime",
    "flowStartSeconds": "start_s",
    "flowEndSeconds": "end_s",
    "flowStartMilliseconds": "start_ms",
    "flowEndMilliseconds": "end_ms",
    "flowStartMicroseconds": "start_ntp",
    "flowEndMicroseconds": "end_ntp",
    "flowStartNanoseconds": "start_ntp_ns",
    "flowEndNanoseconds": "end_ntp_ns",
    "flowStartDeltaMicroseconds": "start_delta_us",
    "flowEndDeltaMicroseconds": "end_delta_us",
    "flowDurationMilliseconds": "duration_ms",
    "systemInitTimeMilliseconds": "sysinit_ms",
    "samplingInterval": "sampling",
    "samplerRandomInterval": "sampler_interval",
    "samplingPacketInterval": "packet_interval",
    "samplingPacketSpace": "packet_space",
    "samplingSize": "sampling_size",
    "samplingPopulation": "sampling_population",
    "samplerId": "sampler_id",
    "selectorId": "selector_id",
    "dataLinkFrameSize": "frame_size",
    "dataLinkFrameSection": "frame",
}

#: (enterprise number, IE id) -> role. Enterprise 0 is IANA.
ROLES: dict[tuple[int, int], str] = {
    (0, e.ie): _ROLE_BY_NAME[e.name] for e in ELEMENTS.values() if e.name in _ROLE_BY_NAME
}
ROLES[(REVERSE_PEN, ELEMENTS[1].ie)] = "rbytes"
ROLES[(REVERSE_PEN, ELEMENTS[2].ie)] = "rpackets"
ROLES[(REVERSE_PEN, ELEMENTS[85].ie)] = "rbytes_total"
ROLES[(REVERSE_PEN, ELEMENTS[86].ie)] = "rpackets_total"

#: Roles read as raw bytes rather than integers.
BYTES_ROLES = frozenset({"frame"})
#: Roles holding a 16-byte address, read as two 64-bit halves.
ADDRESS6_ROLES = frozenset({"src6", "dst6"})
