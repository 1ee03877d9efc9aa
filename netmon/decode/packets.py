"""Link layer to UDP for whole batches of frames: find the UDP/123 packets, cheaply.

netmon's one L2-L4 parser: ``udp123`` finds NTP for the decoder, ``udp_packets``
the export datagrams in a capture (NetFlow/IPFIX/sFlow, by collector port) and
``ip_packets`` the headers of sampled frames (sFlow, IPFIX dataLinkFrameSection).

A campus capture is mostly not NTP, so every frame goes through a handful of
column-wide byte gathers (link type, VLAN tags, IP version and protocol, ports)
and only UDP packets with port 123 on either side go further. Nothing here loops
over packets in Python.

Link types: Ethernet (1), Linux cooked SLL (113) and SLL2 (276), raw IP (101, 12,
14, 228 = IPv4, 229 = IPv6), BSD loopback (0 NULL, 108 LOOP). 802.1Q, 802.1ad and
QinQ tags are stepped over (the outermost VLAN id is kept). IPv4 options are
honoured; IPv6 hop-by-hop, routing, destination options, AH and atomic fragment
headers are stepped over. Fragments (IPv4 or IPv6) are counted and skipped: only a
first fragment carries the ports, and NTP packets are never fragmented in practice.

Every frame that is not UDP/123 is counted under one ``decode.skip.<reason>``:
``unknown_linktype``, ``not_ip``, ``truncated`` (the capture ends before the UDP
header), ``fragment``, ``bad_ip`` (impossible header lengths), ``not_udp123``
(other traffic: the usual case) and ``bad_udp`` (a UDP length below 8).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from netmon import health
from netmon.batch import Frames

NTP_PORT = 123
VLAN_ETHERTYPES = (0x8100, 0x88A8, 0x9100)
IPV4, IPV6 = 0x0800, 0x86DD
MAX_VLAN_TAGS = 3
MAX_IPV6_EXTENSIONS = 6
IPV6_SKIPPABLE = (0, 43, 60)
IPV6_FRAGMENT, IPV6_AH = 44, 51
MAPPED = np.uint64(0xFFFF_0000_0000)
UNKNOWN_LINK = -1


@dataclass
class UdpPackets:
    """UDP/123 packets found in a Frames batch, one entry per packet.

    ``index`` is the frame number in the batch; addresses are 64-bit halves as in
    OBS_DTYPE (IPv4 as IPv4-mapped); ``ip_len`` the IP length in bytes (header and
    payload); ``payload_at`` the position of the UDP payload in ``Frames.data``,
    ``payload_len`` its length on the wire (from the UDP header) and ``captured``
    how many of those bytes the capture holds.
    """

    index: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    vlan: np.ndarray
    ip_len: np.ndarray
    payload_at: np.ndarray
    payload_len: np.ndarray
    captured: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])


class _Bytes:
    """Bounds-safe big-endian reads at many positions of one buffer at once.

    Each width is a view of the buffer as integers at every byte offset (stride 1),
    so reading a 16-, 32- or 64-bit field is one gather; positions past the end read
    the last whole value (callers check lengths against the capture).
    """

    def __init__(self, data: np.ndarray) -> None:
        if len(data) < 8:
            data = np.concatenate([data, np.zeros(8 - len(data), dtype=np.uint8)])
        self.data = np.ascontiguousarray(data)
        self.views = {
            size: np.ndarray(shape=(len(self.data) - size + 1,), dtype=f">u{size}", buffer=self.data, strides=(1,))
            for size in (2, 4, 8)
        }

    def u8(self, at: np.ndarray) -> np.ndarray:
        return self.data[np.minimum(at, len(self.data) - 1)].astype(np.int64)

    def _read(self, size: int, at: np.ndarray) -> np.ndarray:
        view = self.views[size]
        return view[np.minimum(at, len(view) - 1)]

    def u16(self, at: np.ndarray) -> np.ndarray:
        return self._read(2, at).astype(np.int64)

    def u32(self, at: np.ndarray) -> np.ndarray:
        return self._read(4, at).astype(np.int64)

    def u64(self, at: np.ndarray) -> np.ndarray:
        return self._read(8, at).astype(np.uint64)


class _Remaining:
    """Frames still in the running; each drop records the newly dropped ones under its reason.

    ``publish`` counts them in health (``decode.skip.<reason>``); recording first lets
    the link and IP layers of one batch be parsed once and shared (see ``_layers``).
    """

    def __init__(self, n: int) -> None:
        self.keep = np.ones(n, dtype=bool)
        self.dropped: dict[str, int] = {}

    def drop(self, reason: str, mask: np.ndarray) -> None:
        n = int(np.count_nonzero(self.keep & mask))
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n
            self.keep &= ~mask

    def copy(self) -> "_Remaining":
        out = _Remaining(0)
        out.keep, out.dropped = self.keep.copy(), dict(self.dropped)
        return out

    def publish(self) -> None:
        for reason, n in self.dropped.items():
            health.count(f"decode.skip.{reason}", n)


def _one_of(values: np.ndarray, wanted: tuple[int, ...]) -> np.ndarray:
    """``np.isin(values, wanted)``; for a handful of wanted values one compare each, which on a
    batch's every frame is a few times cheaper than ``isin``'s general path."""
    if len(wanted) > 8:
        return np.isin(values, wanted)
    found = np.zeros(values.shape, dtype=bool)
    for value in wanted:
        found |= values == value
    return found


def _at(n: int, rows: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _link(frames: Frames, read: _Bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ethertype, network-layer position, outer VLAN id) per frame; ethertype -1 = unknown link type."""
    n = len(frames)
    offset = frames.offset.astype(np.int64)
    linktype = frames.linktype.astype(np.int64)
    ethertype = np.full(n, UNKNOWN_LINK, dtype=np.int64)
    at = offset.copy()
    vlan = np.zeros(n, dtype=np.int64)
    single = n > 0 and bool((linktype == linktype[0]).all())
    kinds = linktype[:1] if single else np.unique(linktype)
    for kind in kinds.tolist():
        sel = linktype == kind if len(kinds) > 1 else slice(None)
        off = offset[sel]
        if kind == 1:
            ethertype[sel], at[sel] = read.u16(off + 12), off + 14
        elif kind == 113:
            ethertype[sel], at[sel] = read.u16(off + 14), off + 16
        elif kind == 276:
            ethertype[sel], at[sel] = read.u16(off), off + 20
        elif kind in (101, 12, 14):
            version = read.u8(off) >> 4
            ethertype[sel] = np.where(version == 4, IPV4, np.where(version == 6, IPV6, 1))
        elif kind in (228, 229):
            ethertype[sel] = IPV4 if kind == 228 else IPV6
        elif kind in (0, 108):
            family = read.u32(off)
            if kind == 0:  # host byte order, written by the capturing machine
                swapped = ((family & 0xFF) << 24) | ((family >> 8 & 0xFF) << 16) | ((family >> 16 & 0xFF) << 8) | (family >> 24)
                family = np.where(family > 0xFFFF, swapped, family)
            ethertype[sel] = np.where(family == 2, IPV4, np.where(np.isin(family, (10, 24, 28, 30)), IPV6, 1))
            at[sel] = off + 4
    seen = np.zeros(n, dtype=bool)
    for _ in range(MAX_VLAN_TAGS):
        tagged = _one_of(ethertype, VLAN_ETHERTYPES)
        if not tagged.any():
            break
        vlan = np.where(tagged & ~seen, read.u16(at) & 0x0FFF, vlan)
        seen |= tagged
        ethertype = np.where(tagged, read.u16(at + 2), ethertype)
        at = np.where(tagged, at + 4, at)
    return ethertype, at, vlan


def _ipv6_extensions(read: _Bytes, header: np.ndarray, l4: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Step over IPv6 extension headers for ``rows``; returns 1 = fragment, 2 = unparsed, 0 = ok."""
    status = np.zeros(len(rows), dtype=np.int64)
    for _ in range(MAX_IPV6_EXTENSIONS):
        nh = header[rows]
        skippable = np.isin(nh, IPV6_SKIPPABLE) | (nh == IPV6_AH)
        fragment = nh == IPV6_FRAGMENT
        active = (skippable | fragment) & (status == 0)
        if not active.any():
            break
        at = l4[rows]
        fo = read.u16(at + 2)
        status = np.where(fragment & active & ((fo & 0xFFF9) != 0), 1, status)
        length = np.where(fragment, 8, np.where(nh == IPV6_AH, (read.u8(at + 1) + 2) * 4, (read.u8(at + 1) + 1) * 8))
        go = active & (status == 0)
        header[rows[go]] = read.u8(at[go])
        l4[rows[go]] = at[go] + length[go]
    still = np.isin(header[rows], IPV6_SKIPPABLE + (IPV6_FRAGMENT, IPV6_AH)) & (status == 0)
    return np.where(still, 2, status)


@dataclass
class _Network:
    """Per frame of a batch: IP header position, IPv4 or not, protocol, L4 position, capture end, VLAN,
    and the two 16-bit words at the L4 position (the ports of TCP and UDP; callers check lengths)."""

    ip: np.ndarray
    v4: np.ndarray
    protocol: np.ndarray
    l4: np.ndarray
    end: np.ndarray
    vlan: np.ndarray
    sport: np.ndarray
    dport: np.ndarray


def _network(frames: Frames, read: _Bytes, left: _Remaining) -> _Network:
    """Link and IP layers of every frame; frames that carry no whole, unfragmented IP header are dropped."""
    offset = frames.offset.astype(np.int64)
    end = offset + frames.caplen.astype(np.int64)
    ethertype, ip, vlan = _link(frames, read)
    left.drop("unknown_linktype", ethertype == UNKNOWN_LINK)
    left.drop("not_ip", (ethertype != IPV4) & (ethertype != IPV6))
    first = read.u8(ip)
    v4 = ethertype == IPV4
    left.drop("bad_ip", first >> 4 != np.where(v4, 4, 6))
    left.drop("truncated", ip + np.where(v4, 20, 40) > end)
    ihl = (first & 0x0F) * 4
    left.drop("bad_ip", v4 & (ihl < 20))
    protocol = read.u8(ip + np.where(v4, 9, 6))
    l4 = np.where(v4, ip + ihl, ip + 40)
    left.drop("fragment", v4 & ((read.u16(ip + 6) & 0x3FFF) != 0))
    ext = np.flatnonzero(left.keep & ~v4 & _one_of(protocol, IPV6_SKIPPABLE + (IPV6_FRAGMENT, IPV6_AH)))
    if len(ext):
        status = _ipv6_extensions(read, protocol, l4, ext)
        left.drop("fragment", _at(len(frames), ext[status == 1]))
        left.drop("bad_ip", _at(len(frames), ext[status == 2]))
    return _Network(ip, v4, protocol, l4, end, vlan, read.u16(l4), read.u16(l4 + 2))


def _addresses(read: _Bytes, ip: np.ndarray, is_v4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(src_hi, src_lo, dst_hi, dst_lo) of IP headers at ``ip``, IPv4 as IPv4-mapped."""
    src_hi = np.where(is_v4, np.uint64(0), read.u64(ip + 8))
    src_lo = np.where(is_v4, MAPPED | read.u32(ip + 12).astype(np.uint64), read.u64(ip + 16))
    dst_hi = np.where(is_v4, np.uint64(0), read.u64(ip + 24))
    dst_lo = np.where(is_v4, MAPPED | read.u32(ip + 16).astype(np.uint64), read.u64(ip + 32))
    return src_hi.astype(np.uint64), src_lo.astype(np.uint64), dst_hi.astype(np.uint64), dst_lo.astype(np.uint64)


def _ip_length(read: _Bytes, frames: Frames, index: np.ndarray, ip: np.ndarray, is_v4: np.ndarray) -> np.ndarray:
    """IP length (header and payload, bytes) from the header, or from the wire length when it says 0 (TSO, jumbograms)."""
    total = np.where(is_v4, read.u16(ip + 2), read.u16(ip + 4) + 40)
    return np.where(total > 0, total, frames.wirelen[index].astype(np.int64) - (ip - frames.offset[index].astype(np.int64)))


#: Batches whose link and IP layers the export router parsed, kept for the NTP decoder.
#: In a replay the router reads each batch just before the NTP decoder reads it; the decoder
#: takes the router's parse instead of repeating it. Only the router leaves a parse (no other
#: reader's batch is read by the decoder after it), and the store is bounded, so a batch the
#: decoder never reads is not held for long.
SHARED_BATCHES = 8
_shared: OrderedDict[int, tuple[Frames, _Bytes, _Remaining, _Network]] = OrderedDict()
_shared_lock = threading.Lock()


def _layers(frames: Frames, take: bool = False, share: bool = False) -> tuple[_Bytes, _Remaining, _Network]:
    """Reader, surviving frames and network layer of a batch.

    ``take`` (the NTP decoder): use the parse an earlier reader left for this batch object, if
    any, and remove it; ``share`` (the export router): leave a copy of this parse for the decoder."""
    if take:
        with _shared_lock:
            kept = _shared.pop(id(frames), None)
        if kept is not None and kept[0] is frames:
            return kept[1], kept[2], kept[3]
    read = _Bytes(frames.data)
    left = _Remaining(len(frames))
    net = _network(frames, read, left)
    if share:
        with _shared_lock:
            _shared[id(frames)] = (frames, read, left.copy(), net)
            while len(_shared) > SHARED_BATCHES:
                _shared.popitem(last=False)
    return read, left, net


def udp123(frames: Frames) -> UdpPackets:
    """The UDP packets with port 123 on either side; every other frame counted as a skip."""
    return udp_packets(frames, (NTP_PORT,), either_side=True, count=True)


def udp_packets(frames: Frames, ports: tuple[int, ...] | None, either_side: bool = False, count: bool = False,
                share: bool = False) -> UdpPackets:
    """The UDP packets sent to one of ``ports`` (or from one too, with ``either_side``; None = any port).

    With ``count`` every other frame is counted under ``decode.skip.<reason>`` (the
    NTP path's health); the flow path looks for export datagrams in the same frames
    and counts its own skips, so it passes False and nothing is counted twice. The
    NTP path reads a batch last: with ``count`` it takes the batch's parse that the
    export router left with ``share`` (see ``_layers``) instead of parsing it again.
    """
    read, left, net = _layers(frames, take=count, share=share)
    ip, v4, protocol, l4, end = net.ip, net.v4, net.protocol, net.l4, net.end
    skip = "not_udp123"
    left.drop(skip, protocol != 17)
    left.drop("truncated", l4 + 4 > end)
    sport, dport = net.sport, net.dport
    if ports is not None:
        wanted = _one_of(dport, ports)
        if either_side:
            wanted |= _one_of(sport, ports)
        left.drop(skip, ~wanted)
    left.drop("truncated", l4 + 8 > end)

    if count:
        left.publish()
    index = np.flatnonzero(left.keep)
    ip, l4, is_v4 = ip[index], l4[index], v4[index]
    udp_len = read.u16(l4 + 4)
    ip_len = _ip_length(read, frames, index, ip, is_v4)
    room = ip_len - (l4 - ip)
    good = (udp_len >= 8) & (room >= 8)
    if count and not good.all():
        health.count("decode.skip.bad_udp", int(np.count_nonzero(~good)))
    index, ip, l4, is_v4, udp_len, ip_len, room = (a[good] for a in (index, ip, l4, is_v4, udp_len, ip_len, room))
    payload_len = np.minimum(udp_len, room) - 8
    payload_at = l4 + 8
    captured = np.clip(np.minimum(payload_len, end[index] - payload_at), 0, None)
    src_hi, src_lo, dst_hi, dst_lo = _addresses(read, ip, is_v4)
    return UdpPackets(
        index=index,
        src_hi=src_hi,
        src_lo=src_lo,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        sport=sport[index].astype(np.uint16),
        dport=dport[index].astype(np.uint16),
        vlan=net.vlan[index].astype(np.uint16),
        ip_len=ip_len,
        payload_at=payload_at,
        payload_len=payload_len,
        captured=captured,
    )


@dataclass
class IpPackets:
    """Every IP packet of a Frames batch, whatever its protocol (flow rows of sampled headers).

    ``index`` is the frame number in the batch; ``proto`` the transport protocol;
    ``sport``/``dport`` 0 unless TCP or UDP with the ports captured; ``ip_len`` bytes.
    """

    index: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    proto: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    ip_len: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])


def ip_packets(frames: Frames) -> IpPackets:
    """The IP header fields of every frame that has one; nothing is counted (the frames are counted where they are decoded)."""
    read, left, net = _layers(frames)
    index = np.flatnonzero(left.keep)
    ip, l4, is_v4, protocol = net.ip[index], net.l4[index], net.v4[index], net.protocol[index]
    has_ports = np.isin(protocol, (6, 17)) & (l4 + 4 <= net.end[index])
    sport = np.where(has_ports, net.sport[index], 0)
    dport = np.where(has_ports, net.dport[index], 0)
    src_hi, src_lo, dst_hi, dst_lo = _addresses(read, ip, is_v4)
    return IpPackets(index, src_hi, src_lo, dst_hi, dst_lo, protocol.astype(np.uint8), sport.astype(np.uint16),
                     dport.astype(np.uint16), _ip_length(read, frames, index, ip, is_v4))
