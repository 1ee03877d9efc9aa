"""Observation rows back to wire frames: Ethernet (or raw IP) / IPv4 or IPv6 / UDP / NTP.

The simulator, the evidence report (pcap excerpts) and the benchmarks need real
packets made from :data:`~netmon.batch.OBS_DTYPE` rows, millions at a time, so every
field is written for whole columns at once with numpy; no Python loop per packet.

What a row becomes:

* IPv4 when both addresses are IPv4-mapped, IPv6 otherwise; an 802.1Q tag when
  ``vlan`` is non-zero; valid IPv4 header and UDP checksums.
* The UDP payload is ``ntp_len`` bytes; when ``ntp_len`` is 0 it is ``bytes /
  packets`` minus the IP and UDP headers when ``bytes`` is known, else the natural
  size (48 + extension fields + ``mac_len`` for modes 0-5, 12 for mode 6,
  8 for mode 7).
* Modes 0-5: the 48-byte RFC 5905 header from the row's fields, ``num_exts``
  extension fields of 16 bytes (type 0x0104, zero body; the last one 28 bytes when
  there is no MAC, as RFC 7822 asks) and a MAC of ``mac_len``
  bytes (a key ID of 1 and a zero digest; a 4-byte MAC is a crypto-NAK, key ID 0).
* Mode 6: the 12-byte control header (R bit, opcode, count = payload - 12);
  mode 7: the 8-byte private header (R bit, request code, implementation 3).
  Bytes past the header are zero up to the payload length.
* ``sport``/``dport`` other than 123 still get the same payload: benchmarks use
  that for background UDP; ``protocol`` (6 = TCP with a 20-byte header) makes
  background TCP.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from netmon.batch import Frames

ETH_SRC = bytes.fromhex("020000000001")
ETH_DST = bytes.fromhex("020000000002")
EXT_TYPE = 0x0104
EXT_LEN = 16
#: without a MAC the last extension field is 28 bytes, so it cannot pass for a MAC (RFC 7822)
LAST_EXT_LEN = 28
#: rows written at a time: the scatters are several times faster when their
#: index arrays stay in cache
ENCODE_CHUNK = 8192
MAPPED_HI = np.uint64(0)


def _be(values: np.ndarray, dtype: str) -> np.ndarray:
    """Big-endian bytes of ``values`` as an (n, size) uint8 matrix."""
    big = np.ascontiguousarray(values).astype(dtype)
    return big.view(np.uint8).reshape(len(big), np.dtype(dtype).itemsize)


def _put(data: np.ndarray, at: np.ndarray, matrix: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Write row ``i`` of ``matrix`` at ``data[at[i]:]`` (only where ``mask`` is true).

    Whole rows go 8 bytes per store through a view of ``data`` as 64-bit words at
    every byte offset (stride 1); a row cut by ``mask`` goes byte by byte.
    """
    if mask is not None and not mask.all():
        index = at[:, None] + np.arange(matrix.shape[1], dtype=np.int64)
        data[index[mask]] = matrix[mask]
        return
    width = matrix.shape[1]
    full = width // 8 * 8 if len(data) >= 8 else 0
    if full:
        words = np.ascontiguousarray(matrix[:, :full]).view(">u8")
        view = np.ndarray(shape=(len(data) - 7,), dtype=">u8", buffer=data, strides=(1,))
        for k in range(full // 8):
            view[at + 8 * k] = words[:, k]
    for j in range(full, width):
        data[at + j] = matrix[:, j]


def _fold(total: np.ndarray) -> np.ndarray:
    """One's-complement checksum from a sum of 16-bit words."""
    total = total.astype(np.uint64)
    for _ in range(3):
        total = (total & np.uint64(0xFFFF)) + (total >> np.uint64(16))
    return (~total.astype(np.uint16)).astype(np.uint16)


def _word_sum(matrix: np.ndarray) -> np.ndarray:
    """Sum of the big-endian 16-bit words of each row (rows of even width)."""
    if matrix.shape[1] % 2:
        matrix = np.pad(matrix, ((0, 0), (0, 1)))
    return np.ascontiguousarray(matrix).view(">u2").astype(np.uint64).sum(axis=1)


def _natural_length(rows: np.ndarray) -> np.ndarray:
    """Payload bytes a row's NTP message needs: header, extension fields and MAC (modes 1-5), 12 or 8."""
    mode = rows["mode"] & 7
    natural = 48 + _ext_bytes(rows["num_exts"], rows["mac_len"]) + rows["mac_len"].astype(np.int64)
    return np.where(mode == 6, 12, np.where(mode == 7, 8, natural))


def _ntp_payload(rows: np.ndarray) -> np.ndarray:
    """The bytes each row's payload starts with, (n, 48) uint8."""
    n = len(rows)
    head = np.zeros((n, 48), dtype=np.uint8)
    mode = rows["mode"].astype(np.uint8) & 7
    version = rows["version"].astype(np.uint8) & 7
    first = ((rows["leap"].astype(np.uint8) & 3) << 6) | (version << 3) | mode
    head[:, 0] = first
    head[:, 1] = rows["stratum"]
    head[:, 2] = rows["poll"].view(np.uint8)
    head[:, 3] = rows["precision"].view(np.uint8)
    head[:, 4:8] = _be(rows["root_delay"], ">u4")
    head[:, 8:12] = _be(rows["root_disp"], ">u4")
    head[:, 12:16] = _be(rows["ref_id"], ">u4")
    for col, name in ((16, "ref_ts"), (24, "org_ts"), (32, "rec_ts"), (40, "xmt_ts")):
        head[:, col:col + 8] = _be(rows[name], ">u8")
    response = rows["ctl_response"].astype(np.uint8) & 1
    code = rows["ctl_code"].astype(np.uint8)
    six = mode == 6
    if six.any():
        ctl = np.zeros((int(six.sum()), 48), dtype=np.uint8)
        ctl[:, 0] = (rows["leap"][six] & 3) << 6 | version[six] << 3 | 6
        ctl[:, 1] = response[six] << 7 | (code[six] & 0x1F)
        ctl[:, 2:4] = _be(np.arange(1, len(ctl) + 1) & 0xFFFF, ">u2")
        head[six] = ctl
    seven = mode == 7
    if seven.any():
        ctl = np.zeros((int(seven.sum()), 48), dtype=np.uint8)
        ctl[:, 0] = response[seven] << 7 | version[seven] << 3 | 7
        ctl[:, 2] = 3
        ctl[:, 3] = code[seven]
        head[seven] = ctl
    return head


def _ext_bytes(num_exts: np.ndarray, mac_len: np.ndarray) -> np.ndarray:
    """Bytes of ``num_exts`` extension fields: 16 each, the last 28 when no MAC follows."""
    exts = num_exts.astype(np.int64)
    return EXT_LEN * exts + np.where((exts > 0) & (mac_len == 0), LAST_EXT_LEN - EXT_LEN, 0)


def _payload_lengths(rows: np.ndarray, natural: np.ndarray, ip_header: np.ndarray, l4_header: np.ndarray) -> np.ndarray:
    length = rows["ntp_len"].astype(np.int64)
    packets = np.where(rows["packets"] > 0, rows["packets"], 1.0)
    ip_len = np.rint(rows["bytes"] / packets).astype(np.int64)
    from_bytes = ip_len - ip_header - l4_header
    length = np.where(length > 0, length, np.where((rows["bytes"] > 0) & (from_bytes >= 0), from_bytes, natural))
    return length


@dataclass
class _Layout:
    """Per-row sizes of every layer (bytes) and the choices behind them."""

    proto: np.ndarray
    v4: np.ndarray
    tagged: np.ndarray
    l2: np.ndarray
    ip_header: np.ndarray
    l4_header: np.ndarray
    payload: np.ndarray

    @property
    def frame_len(self) -> np.ndarray:
        return self.l2 + self.ip_header + self.l4_header + self.payload

    def part(self, rows: slice) -> "_Layout":
        return _Layout(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def _layout(rows: np.ndarray, linktype: int, proto: np.ndarray) -> _Layout:
    n = len(rows)
    v4 = (rows["src_hi"] == MAPPED_HI) & (rows["src_lo"] >> np.uint64(32) == np.uint64(0xFFFF)) & (
        rows["dst_hi"] == MAPPED_HI
    ) & (rows["dst_lo"] >> np.uint64(32) == np.uint64(0xFFFF))
    tagged = (rows["vlan"] != 0) & (linktype == 1)
    l2 = np.where(tagged, 18, 14) if linktype == 1 else np.zeros(n, dtype=np.int64)
    ip_header = np.where(v4, 20, 40).astype(np.int64)
    l4_header = np.where(proto == 6, 20, 8).astype(np.int64)
    payload = _payload_lengths(rows, _natural_length(rows), ip_header, l4_header)
    return _Layout(proto, v4, tagged, l2.astype(np.int64), ip_header, l4_header, payload)


def frames_from_observations(rows: np.ndarray, linktype: int = 1, protocol: np.ndarray | None = None) -> Frames:
    """Wire frames for ``rows`` (OBS_DTYPE), in row order, one contiguous buffer.

    ``linktype`` 1 makes Ethernet frames, 101 raw IP packets. ``protocol`` (per row,
    17 = UDP by default, 6 = TCP) lets benchmarks mix in background TCP.
    ``weight`` is the row's ``packets`` (1 when 0), ``time`` the row's time.
    The buffer is allocated once and filled a cache-sized chunk of rows at a time.
    """
    if linktype not in (1, 101):
        raise ValueError(f"frames_from_observations makes linktype 1 (Ethernet) or 101 (raw IP), not {linktype}")
    n = len(rows)
    proto = np.full(n, 17, dtype=np.uint8) if protocol is None else np.asarray(protocol, dtype=np.uint8)
    layout = _layout(rows, linktype, proto)
    frame_len = layout.frame_len
    offset = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(frame_len[:-1], out=offset[1:])
    data = np.zeros(int(frame_len.sum()), dtype=np.uint8)
    for lo in range(0, n, ENCODE_CHUNK):
        part = slice(lo, lo + ENCODE_CHUNK)
        _fill(data, offset[part], rows[part], linktype, layout.part(part))
    return Frames(
        data=data,
        offset=offset,
        caplen=frame_len,
        wirelen=frame_len.copy(),
        time=rows["time"].astype(np.float64),
        linktype=np.full(n, linktype, dtype=np.uint16),
        weight=np.where(rows["packets"] > 0, rows["packets"], 1.0).astype(np.float64),
    )


def _fill(data: np.ndarray, offset: np.ndarray, rows: np.ndarray, linktype: int, layout: _Layout) -> None:
    """Write the frames of ``rows`` into ``data`` at ``offset``."""
    v4, payload, tcp = layout.v4, layout.payload, layout.proto == 6
    ip_at = offset + layout.l2
    if linktype == 1:
        _write_ethernet(data, offset, v4, layout.tagged, rows["vlan"].astype(np.uint16))
    _write_ip(data, rows, ip_at, v4, layout.ip_header + layout.l4_header + payload, layout.proto)
    l4_at = ip_at + layout.ip_header
    pay_at = l4_at + layout.l4_header
    keep = np.arange(48)[None, :] < payload[:, None]
    head = np.where(keep, _ntp_payload(rows), 0).astype(np.uint8)
    written = _write_ext_and_mac(data, rows, pay_at, payload)
    _put(data, pay_at, head, keep)
    _write_l4(data, rows, l4_at, payload, v4, tcp, written + _word_sum(head))


def _write_ethernet(data: np.ndarray, offset: np.ndarray, v4: np.ndarray, tagged: np.ndarray, vlan: np.ndarray) -> None:
    macs = np.frombuffer(ETH_DST + ETH_SRC, dtype=np.uint8)
    _put(data, offset, np.broadcast_to(macs, (len(offset), 12)))
    ethertype = np.where(v4, 0x0800, 0x86DD).astype(np.uint16)
    untagged = ~tagged
    _put(data, offset[untagged] + 12, _be(ethertype[untagged], ">u2"))
    if tagged.any():
        tag = np.zeros((int(tagged.sum()), 6), dtype=np.uint8)
        tag[:, 0:2] = _be(np.full(len(tag), 0x8100), ">u2")
        tag[:, 2:4] = _be(vlan[tagged] & 0x0FFF, ">u2")
        tag[:, 4:6] = _be(ethertype[tagged], ">u2")
        _put(data, offset[tagged] + 12, tag)


def _write_ip(data: np.ndarray, rows: np.ndarray, ip_at: np.ndarray, v4: np.ndarray, ip_len: np.ndarray, proto: np.ndarray) -> None:
    if v4.any():
        r = rows[v4]
        hdr = np.zeros((len(r), 20), dtype=np.uint8)
        hdr[:, 0] = 0x45
        hdr[:, 2:4] = _be(ip_len[v4], ">u2")
        hdr[:, 4:6] = _be(np.nonzero(v4)[0] & 0xFFFF, ">u2")
        hdr[:, 6] = 0x40  # don't fragment
        hdr[:, 8] = 64
        hdr[:, 9] = proto[v4]
        hdr[:, 12:16] = _be(r["src_lo"] & np.uint64(0xFFFF_FFFF), ">u4")
        hdr[:, 16:20] = _be(r["dst_lo"] & np.uint64(0xFFFF_FFFF), ">u4")
        hdr[:, 10:12] = _be(_fold(_word_sum(hdr)), ">u2")
        _put(data, ip_at[v4], hdr)
    v6 = ~v4
    if v6.any():
        r = rows[v6]
        hdr = np.zeros((len(r), 40), dtype=np.uint8)
        hdr[:, 0] = 0x60
        hdr[:, 4:6] = _be(ip_len[v6] - 40, ">u2")
        hdr[:, 6] = proto[v6]
        hdr[:, 7] = 64
        for col, name in ((8, "src_hi"), (16, "src_lo"), (24, "dst_hi"), (32, "dst_lo")):
            hdr[:, col:col + 8] = _be(r[name], ">u8")
        _put(data, ip_at[v6], hdr)


def _write_ext_and_mac(data: np.ndarray, rows: np.ndarray, pay_at: np.ndarray, payload: np.ndarray) -> np.ndarray:
    """Extension field headers and MAC key IDs, where the payload has room for them.

    Returns the sum of the 16-bit words written per row, for the UDP checksum.
    """
    total = np.zeros(len(rows), dtype=np.uint64)
    plain = (rows["mode"] & 7) < 6
    exts = np.where(plain, rows["num_exts"].astype(np.int64), 0)
    mac = np.where(plain, rows["mac_len"].astype(np.int64), 0)
    for k in range(int(exts.max()) if len(exts) else 0):
        size = np.where((exts == k + 1) & (mac == 0), LAST_EXT_LEN, EXT_LEN)
        has = (exts > k) & (payload >= 48 + EXT_LEN * k + size)
        ext = np.zeros((int(has.sum()), 4), dtype=np.uint8)
        ext[:, 0:2] = _be(np.full(len(ext), EXT_TYPE), ">u2")
        ext[:, 2:4] = _be(size[has], ">u2")
        _put(data, pay_at[has] + 48 + EXT_LEN * k, ext)
        total[has] += np.uint64(EXT_TYPE) + size[has].astype(np.uint64)
    mac_at = 48 + _ext_bytes(exts, mac)
    keyed = (mac > 4) & (payload >= mac_at + mac)
    _put(data, pay_at[keyed] + mac_at[keyed], _be(np.ones(int(keyed.sum())), ">u4"))
    total[keyed] += np.uint64(1)
    return total


def _write_l4(
    data: np.ndarray,
    rows: np.ndarray,
    l4_at: np.ndarray,
    payload: np.ndarray,
    v4: np.ndarray,
    tcp: np.ndarray,
    payload_sum: np.ndarray,
) -> None:
    """UDP (or TCP) header with a valid checksum over pseudo-header, header and payload.

    ``payload_sum`` is the sum of the payload's 16-bit words (only the bytes the
    encoder wrote are non-zero, so it is known without reading the payload back).
    """
    n = len(rows)
    l4_len = payload + np.where(tcp, 20, 8)
    ports = np.zeros((n, 4), dtype=np.uint8)
    ports[:, 0:2] = _be(rows["sport"], ">u2")
    ports[:, 2:4] = _be(rows["dport"], ">u2")
    _put(data, l4_at, ports)
    udp = ~tcp
    _put(data, l4_at[udp] + 4, _be(l4_len[udp], ">u2"))
    if tcp.any():
        tcp_hdr = np.zeros((int(tcp.sum()), 10), dtype=np.uint8)
        tcp_hdr[:, 8] = 0x50  # data offset 5 words
        tcp_hdr[:, 9] = 0x18  # PSH, ACK
        _put(data, l4_at[tcp] + 4, tcp_hdr)
    addresses = np.zeros((n, 32), dtype=np.uint8)
    for col, name in ((0, "src_hi"), (8, "src_lo"), (16, "dst_hi"), (24, "dst_lo")):
        addresses[:, col:col + 8] = _be(rows[name], ">u8")
    addresses_v4 = np.concatenate([addresses[:, 12:16], addresses[:, 28:32]], axis=1)
    pseudo = np.where(v4, _word_sum(addresses_v4), _word_sum(addresses))
    pseudo = pseudo + l4_len.astype(np.uint64) + np.where(tcp, 6, 17).astype(np.uint64)
    l4_fixed = _word_sum(np.concatenate([ports, _be(np.where(tcp, 0, l4_len), ">u2")], axis=1))
    tcp_fixed = np.where(tcp, np.uint64(0x5018), np.uint64(0))
    checksum = _fold(pseudo + l4_fixed + tcp_fixed + payload_sum)
    checksum = np.where(udp & (checksum == 0), 0xFFFF, checksum).astype(np.uint16)
    _put(data, l4_at + np.where(tcp, 16, 6), _be(checksum, ">u2"))
