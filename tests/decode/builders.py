"""Make test captures: observation rows to packets, packets to any link type, pcap or pcapng bytes."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from netmon.batch import Frames, addr_halves, empty_observations
from netmon.decode.encode import frames_from_observations

T0 = 1_700_000_000.25


def rows(n: int = 1, src: str = "10.1.2.3", dst: str = "192.0.2.1", **columns: object) -> np.ndarray:
    """``n`` client requests (mode 3, v4) from ``src`` to ``dst``, columns overridden by keyword."""
    out = empty_observations(n)
    out["time"] = T0 + np.arange(n)
    out["src_hi"], out["src_lo"] = addr_halves(src)
    out["dst_hi"], out["dst_lo"] = addr_halves(dst)
    out["sport"], out["dport"] = 40000, 123
    out["version"], out["mode"], out["poll"], out["precision"] = 4, 3, 6, -20
    out["xmt_ts"] = 0xE900_0000_8000_0000 + np.arange(n, dtype=np.uint64)
    for name, value in columns.items():
        out[name] = value
    return out


def ip_packets(observations: np.ndarray) -> list[bytes]:
    """Raw IP packets (no link header) for the rows."""
    frames = frames_from_observations(observations, linktype=101)
    return [bytes(frames.data[o:o + c]) for o, c in zip(frames.offset, frames.caplen)]


def link_header(linktype: int, packet: bytes) -> bytes:
    """A link-layer header of ``linktype`` for an IP packet."""
    v6 = packet[0] >> 4 == 6
    ethertype = 0x86DD if v6 else 0x0800
    if linktype == 1:
        return bytes.fromhex("020000000002020000000001") + struct.pack(">H", ethertype)
    if linktype == 113:
        return struct.pack(">HHH8sH", 0, 1, 6, bytes(8), ethertype)
    if linktype == 276:
        return struct.pack(">HHIHBB8s", ethertype, 0, 2, 1, 0, 6, bytes(8))
    if linktype == 0:
        return struct.pack("<I", 24 if v6 else 2)
    if linktype == 108:
        return struct.pack(">I", 24 if v6 else 2)
    return b""


def vlan_tags(*tags: tuple[int, int]) -> bytes:
    """802.1Q/802.1ad tags (TPID, VLAN id) to put between MAC addresses and the ethertype."""
    return b"".join(struct.pack(">HH", tpid, vid) for tpid, vid in tags)


def frames(packets: Sequence[bytes], linktype: int = 1, times: Sequence[float] | None = None) -> Frames:
    """Frames holding ``packets`` as given (already with their link headers)."""
    data = np.frombuffer(b"".join(packets), dtype=np.uint8) if packets else np.zeros(0, dtype=np.uint8)
    caplen = np.array([len(p) for p in packets], dtype=np.int64)
    offset = np.concatenate(([0], np.cumsum(caplen)[:-1])).astype(np.int64) if len(packets) else caplen
    n = len(packets)
    return Frames(
        data=data, offset=offset, caplen=caplen, wirelen=caplen.copy(),
        time=np.asarray(times if times is not None else T0 + np.arange(n), dtype=np.float64),
        linktype=np.full(n, linktype, dtype=np.uint16), weight=np.ones(n),
    )


def pcap_bytes(packets: Sequence[bytes], linktype: int = 1, endian: str = "<", nanosecond: bool = False,
               times: Sequence[float] | None = None) -> bytes:
    """A classic pcap file in either byte order and resolution."""
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    scale = 1_000_000_000 if nanosecond else 1_000_000
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for i, packet in enumerate(packets):
        t = times[i] if times is not None else T0 + i
        seconds = int(t)
        out.append(struct.pack(endian + "IIII", seconds, round((t - seconds) * scale), len(packet), len(packet)) + packet)
    return b"".join(out)


def pcapng_block(endian: str, kind: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    size = len(body) + 12
    return struct.pack(endian + "II", kind, size) + body + struct.pack(endian + "I", size)


def pcapng_bytes(packets: Sequence[bytes], linktype: int = 1, endian: str = "<", block: str = "epb",
                 tsresol: int | None = None, tsoffset: int = 0, times: Sequence[float] | None = None) -> bytes:
    """A pcapng file: section header, one interface (with if_tsresol/if_tsoffset), packet blocks."""
    shb = pcapng_block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    options = b""
    units = 1_000_000
    if tsresol is not None:
        options += struct.pack(endian + "HH", 9, 1) + bytes([tsresol, 0, 0, 0])
        units = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10 ** tsresol
    if tsoffset:
        options += struct.pack(endian + "HHq", 14, 8, tsoffset)
    if options:
        options += struct.pack(endian + "HH", 0, 0)
    idb = pcapng_block(endian, 1, struct.pack(endian + "HHI", linktype, 0, 0) + options)
    out = [shb, idb]
    for i, packet in enumerate(packets):
        t = (times[i] if times is not None else T0 + i) - tsoffset
        ticks = round(t * units)
        if block == "epb":
            body = struct.pack(endian + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(packet), len(packet)) + packet
            out.append(pcapng_block(endian, 6, body))
        elif block == "spb":
            out.append(pcapng_block(endian, 3, struct.pack(endian + "I", len(packet)) + packet))
        else:
            body = struct.pack(endian + "HHIIII", 0, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(packet), len(packet)) + packet
            out.append(pcapng_block(endian, 2, body))
    return b"".join(out)
