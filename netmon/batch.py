"""The data contract between pipeline stages.

Every stage speaks in batches, never single packets, so Python runs once per batch
and numpy does the per-packet work:

    sources --Frames or Observations--> decode --Observations--> aggregate
            --HostIntervals--> detect --Scored--> sinks

* :class:`Frames` are raw link-layer frames as captured (pcap, AF_PACKET, sFlow raw
  header samples, IPFIX dataLinkFrameSection, eBPF header samples).
* :class:`Observations` are decoded UDP/123 packets or flow records, one row each,
  in one numpy structured array of :data:`OBS_DTYPE`.
* :class:`HostIntervals` are per internal host, per interval feature rows.
* :class:`Scored` is a :class:`HostIntervals` with model scores and findings.

Addresses are IPv6, with IPv4 as IPv4-mapped ``::ffff:a.b.c.d``, held as two
big-endian 64-bit halves (``*_hi``, ``*_lo``) so prefix matching and grouping are
plain integer operations on whole columns.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: One decoded UDP/123 packet or one flow record.
#: Units: ``time`` UNIX seconds (event time); ``packets``/``bytes`` are what the row
#: stands for after sampling correction (a capture row is 1 packet, an sFlow sample
#: at 1-in-1000 is 1000); ``bytes`` counts IP bytes (IP header and payload);
#: NTP short-format fields (``root_delay``, ``root_disp``) are raw 16.16 fixed point
#: seconds; NTP timestamps (``*_ts``) are raw 64-bit 32.32 fixed point as on the wire
#: (era resolved only when converted, see ``netmon.decode.ntp``). ``ntp`` is 1 when
#: the NTP header fields are known (a capture, a raw header sample), 0 for flow
#: records that carry only counts.
OBS_DTYPE = np.dtype(
    [
        ("time", "f8"),
        ("src_hi", "u8"),
        ("src_lo", "u8"),
        ("dst_hi", "u8"),
        ("dst_lo", "u8"),
        ("sport", "u2"),
        ("dport", "u2"),
        ("vlan", "u2"),
        ("packets", "f8"),
        ("bytes", "f8"),
        ("flows", "u4"),
        ("ntp", "u1"),
        ("leap", "u1"),
        ("version", "u1"),
        ("mode", "u1"),
        ("stratum", "u1"),
        ("poll", "i1"),
        ("precision", "i1"),
        ("root_delay", "u4"),
        ("root_disp", "u4"),
        ("ref_id", "u4"),
        ("ref_ts", "u8"),
        ("org_ts", "u8"),
        ("rec_ts", "u8"),
        ("xmt_ts", "u8"),
        ("num_exts", "u1"),
        ("mac_len", "u1"),
        ("ctl_response", "u1"),
        ("ctl_code", "u1"),
        ("ntp_len", "u2"),
    ]
)
"""Field notes beyond the units above:

* ``vlan``: outermost 802.1Q id, 0 when untagged.
* ``flows``: 1 for a flow record, 0 for a packet.
* ``leap``: LI (0-3), 0 for mode 7, which has no LI field.
* ``ref_id``: the 4 reference-ID bytes as a big-endian integer (an IPv4 address,
  a refclock code such as ``GPS``, or a KoD code such as ``RATE`` when stratum is 0).
* ``mac_len``: bytes of MAC after the header and extension fields, key ID included
  (0, 4 for a crypto-NAK, 20 for MD5, 24 for SHA-1, ...).
* ``ctl_response``: the R bit of mode 6 and 7 packets (1 = response).
* ``ctl_code``: mode 6 opcode or mode 7 request code (42 = MON_GETLIST_1, monlist).
* ``ntp_len``: UDP payload length in bytes.
"""


def empty_observations(n: int = 0) -> np.ndarray:
    """A zeroed observation array of ``n`` rows."""
    return np.zeros(n, dtype=OBS_DTYPE)


@dataclass
class Frames:
    """Raw link-layer frames as captured, in one contiguous buffer.

    ``data`` holds the captured bytes of every frame back to back (uint8);
    frame ``i`` is ``data[offset[i]:offset[i] + caplen[i]]``. ``wirelen`` is the
    length on the wire (bytes), ``time`` the capture time (UNIX seconds),
    ``linktype`` the pcap LINKTYPE_* per frame, and ``weight`` the packets each
    frame stands for (1 for a capture, the sampling rate for a sampled frame).
    """

    data: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    time: np.ndarray
    linktype: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return int(self.offset.shape[0])


@dataclass
class Observations:
    """Decoded UDP/123 packets or flow records: a structured array of OBS_DTYPE."""

    rows: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.shape[0])


@dataclass(frozen=True)
class Watermark:
    """A live source's promise that no event before ``time`` (UNIX seconds) will follow.

    Quiet live sources yield one every second or so, so intervals close on time
    even when no UDP/123 packet arrives.
    """

    time: float


#: Per host-interval features: name -> (unit, meaning). Every feature is a float64
#: column; NaN means "unknown from this telemetry" (flow records carry no NTP header),
#: which is not the same as 0.
FEATURES: dict[str, tuple[str, str]] = {
    "requests_out": ("packets", "client requests (mode 3, and mode 1) sent by the host to outside"),
    "replies_in": ("packets", "server replies (mode 4) received by the host"),
    "requests_in": ("packets", "client requests received by the host (it acts as a server)"),
    "replies_out": ("packets", "server replies sent by the host"),
    "bytes_out": ("bytes", "IP bytes of UDP/123 sent by the host"),
    "bytes_in": ("bytes", "IP bytes of UDP/123 received by the host"),
    "servers": ("count", "distinct outside servers the host sent requests to"),
    "client_ports": ("count", "distinct source ports of the host's requests"),
    "clients": ("count", "distinct outside clients of the host acting as server"),
    "instances": ("count", "estimated client instances (independent poll schedules, from request timing per port)"),
    "poll": ("log2 s", "median advertised poll exponent of the host's requests"),
    "rate_vs_poll": ("ratio", "2^poll over the mean request gap of the host's fastest socket (server, port); "
                     "1 = polling as advertised; poll 0 (not advertised) counts as 64 s"),
    "interval_min": ("seconds", "shortest gap between two requests of one socket (server, port)"),
    "server_clients": ("count", "concurrent clients to the host's busiest server across all its sockets: its "
                       "requests times their advertised 2^poll (poll 0: 64 s) over the interval, start bursts "
                       "(iburst, boot sync) set aside"),
    "server_own_ports": ("count", "of server_clients, those on a port of their own (requests on a remembered "
                         "socket 2^poll/2 to 2^poll x 2 after its previous one, as from a client behind NAT)"),
    "server_clients_avg": ("count", "concurrent clients to the host's busiest server over the last 30 min "
                           "(each (host, server) pair averaged, then the busiest pair)"),
    "server_own_ports_avg": ("count", "of server_clients_avg, those on ports of their own"),
    "server_requests": ("packets", "requests to the host's busiest server (the one of server_clients)"),
    "server_requests_eff": ("packets", "the requests server_clients rests on, counted as equals: (sum of 2^poll)^2 / "
                            "sum of 2^(2 poll), start bursts set aside; one request advertising 2^15 s is one "
                            "request of evidence, not 512 of 64 s"),
    "server_kod": ("packets", "KoD received from the host's busiest server, on any socket"),
    "kod_rate": ("packets", "KoD RATE received"),
    "kod_deny": ("packets", "KoD DENY received"),
    "kod_rstr": ("packets", "KoD RSTR received"),
    "kod_other": ("packets", "other KoD codes received"),
    "after_kod": ("packets", "requests sent on a socket after its KoD without backing off (within the hold-off: "
                  "any after DENY/RSTR; after RATE, sooner than 2^poll/2 after the previous request)"),
    "org_zero": ("packets", "requests with a zero origin timestamp (data-minimising clients)"),
    "org_match": ("packets", "requests whose origin equals the transmit (interleaved: receive) timestamp of the "
                  "last reply the server sent that socket"),
    "org_mismatch": ("packets", "requests whose non-zero origin does not (judged on unsampled rows after a reply)"),
    "ctl_out": ("packets", "mode 6/7 packets sent by the host"),
    "ctl_in": ("packets", "mode 6/7 packets received by the host"),
    "ctl_bytes_out": ("bytes", "mode 6/7 IP bytes sent by the host"),
    "ctl_bytes_in": ("bytes", "mode 6/7 IP bytes received by the host"),
    "monlist_out": ("packets", "mode 7 MON_GETLIST(_1) responses sent by the host to outside campus"),
    "amplification": ("ratio", "bytes out / bytes in of the host's mode 6/7 replies against requests, outside peers"),
    "reply_ratio": ("ratio", "reply bytes in / request bytes out for the host as client"),
    "flows": ("count", "flow records seen (0 for packet sources)"),
    **{f"mode{m}_out": ("packets", f"mode {m} packets sent by the host") for m in range(8)},
    **{f"mode{m}_in": ("packets", f"mode {m} packets received by the host") for m in range(8)},
    **{f"version{v}_out": ("packets", f"NTP version {v} packets sent by the host") for v in range(1, 5)},
}


@dataclass
class HostIntervals:
    """Feature rows for the internal hosts seen in one interval.

    ``start`` and ``end`` are the interval bounds (UNIX seconds, event time);
    ``host`` the host key as text (an address, or an IPv6 /64 prefix such as
    ``2001:db8:1:2::/64`` when roll-up is on); ``group`` the host group from the
    config; ``role`` "client", "server" or "both"; ``features`` one float64 column
    per :data:`FEATURES` name, aligned with ``host``.
    ``servers_by_host`` maps host -> {server address text: requests}, for the
    allowlist rule and evidence.
    """

    start: float
    end: float
    host: np.ndarray
    group: np.ndarray
    role: np.ndarray
    features: dict[str, np.ndarray]
    servers_by_host: dict[str, dict[str, float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.host.shape[0])


SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Finding:
    """One explained reason to look at a host in one interval.

    ``detector`` names the rule or model (``rule.kod_ignored``,
    ``model.population``); ``score`` is the detector's own magnitude (for models
    an anomaly score in [0, 1], for rules how far past its threshold); the
    ``explanation`` is one human sentence; ``evidence`` maps feature name to
    ``{"value": v, "baseline": b}`` so a reader sees by how much.
    """

    host: str
    group: str
    start: float
    end: float
    detector: str
    severity: str
    score: float
    explanation: str
    evidence: dict[str, Any] = field(default_factory=dict)
    server: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "group": self.group,
            "start": self.start,
            "end": self.end,
            "rule": self.detector,
            "severity": self.severity,
            "score": self.score,
            "explanation": self.explanation,
            "evidence": self.evidence,
            "server": self.server,
        }


@dataclass
class Scored:
    """What detection hands to the sinks: features, per-host scores, findings."""

    intervals: HostIntervals
    scores: dict[str, np.ndarray]
    findings: list[Finding]


def addr_to_int(text: str) -> int:
    """An IPv4 or IPv6 address as the 128-bit integer of its IPv6 (mapped) form."""
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return 0xFFFF_0000_0000 | int(ip)
    return int(ip)


def addr_halves(text: str) -> tuple[int, int]:
    """(hi, lo) 64-bit halves of an address, as stored in Observations."""
    value = addr_to_int(text)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF


def addr_text(hi: int, lo: int, v6_bits: int = 128) -> str:
    """Text form of an address held as halves; IPv4-mapped prints as IPv4, and an
    IPv6 host rolled up to ``v6_bits`` (already masked) as ``prefix/bits``."""
    value = (int(hi) << 64) | int(lo)
    if value >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(value & 0xFFFF_FFFF))
    name = str(ipaddress.IPv6Address(value))
    return f"{name}/{v6_bits}" if v6_bits < 128 else name


def host_name(address: str, ipv6_prefix: int) -> str:
    """The name an address's host goes by in HostIntervals and findings: IPv4 as is,
    IPv6 rolled up to ``ipv6_prefix`` (e.g. ``2001:db8:1:2::/64``); other text unchanged.

    >>> host_name("2001:db8:1:2:a:b:c:d", 64)
    '2001:db8:1:2::/64'
    >>> host_name("10.0.0.5", 64)
    '10.0.0.5'
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ipv6_prefix < 128:
        return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
    return str(ip)
