"""Flow records as one numpy table, and the rows netmon keeps from them.

Every decoder (NetFlow v5, v9, IPFIX, sFlow sampled headers) produces
:data:`FLOW_DTYPE` rows, all records, whatever the protocol; ``netmon decode
--flows`` prints them. Only UDP/123 records become :class:`~netmon.batch.Observations`
rows, with counts multiplied by the sampling rate.
"""

from __future__ import annotations

import numpy as np

from netmon.batch import OBS_DTYPE, Frames
from netmon.decode.packets import ip_packets

#: One flow record. ``start``/``end`` UNIX seconds; ``packets``/``bytes`` as exported
#: (not sampling-corrected); ``sampling`` the 1-in-N rate that applies (1 = unsampled);
#: addresses as IPv6 (IPv4-mapped) 64-bit halves like OBS_DTYPE; ``version`` the
#: export protocol (5, 9, 10 = IPFIX, 50 = sFlow v5).
FLOW_DTYPE = np.dtype(
    [
        ("start", "f8"),
        ("end", "f8"),
        ("exporter_hi", "u8"),
        ("exporter_lo", "u8"),
        ("src_hi", "u8"),
        ("src_lo", "u8"),
        ("dst_hi", "u8"),
        ("dst_lo", "u8"),
        ("sport", "u2"),
        ("dport", "u2"),
        ("proto", "u1"),
        ("vlan", "u2"),
        ("packets", "f8"),
        ("bytes", "f8"),
        ("sampling", "f8"),
        ("version", "u1"),
    ]
)

MAPPED_HI = np.uint64(0)
MAPPED_LO = np.uint64(0xFFFF_0000_0000)
NTP_PORT = 123
UDP = 17
_NTP_EPOCH = 2208988800


def mapped(v4: np.ndarray) -> np.ndarray:
    """IPv4 addresses (uint) as the low half of their IPv4-mapped IPv6 form."""
    return v4.astype(np.uint64) | MAPPED_LO


def ntp_seconds(value: np.ndarray) -> np.ndarray:
    """IPFIX dateTimeMicro/Nanoseconds (NTP 32.32 format) as UNIX seconds."""
    value = value.astype(np.uint64)
    return (value >> np.uint64(32)).astype(np.float64) - _NTP_EPOCH + (value & np.uint64(0xFFFF_FFFF)).astype(np.float64) / 2**32


def uptime_seconds(export: np.ndarray, uptime_ms: np.ndarray, at_ms: np.ndarray) -> np.ndarray:
    """Absolute time of a sysUptime-relative stamp, allowing for 32-bit uptime wrap.

    The 32-bit difference taken modulo 2^32 and read as signed is the elapsed time
    even across a wrap (a stamp up to ~24.8 days before or after the export).
    """
    delta = (uptime_ms.astype(np.uint32) - at_ms.astype(np.uint32)).view(np.int32)
    return export - delta / 1000.0


def flow_time(cols: dict[str, np.ndarray], edge: str, export: np.ndarray, uptime_ms: np.ndarray, sysinit: np.ndarray) -> np.ndarray | None:
    """Flow ``edge`` ("start"/"end") time from whichever encoding the template used, or None."""
    if f"{edge}_ms" in cols:
        return cols[f"{edge}_ms"].astype(np.float64) / 1000.0
    if f"{edge}_ntp_ns" in cols:
        return ntp_seconds(cols[f"{edge}_ntp_ns"])
    if f"{edge}_ntp" in cols:
        return ntp_seconds(cols[f"{edge}_ntp"])
    if f"{edge}_s" in cols:
        return cols[f"{edge}_s"].astype(np.float64)
    if f"{edge}_delta_us" in cols:
        return export - cols[f"{edge}_delta_us"].astype(np.float64) / 1e6
    if f"{edge}_uptime" in cols:
        at = cols[f"{edge}_uptime"]
        relative = uptime_seconds(export, uptime_ms, at)
        absolute = sysinit + at.astype(np.float64) / 1000.0
        return np.where(uptime_ms >= 0, relative, np.where(np.isnan(sysinit), export, absolute))
    return None


def _address(cols: dict[str, np.ndarray], side: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) of the IPv6 field when set, else of the IPv4 field mapped to IPv6."""
    hi = cols.get(f"{side}6_hi", np.zeros(n, np.uint64))
    lo = cols.get(f"{side}6_lo", np.zeros(n, np.uint64))
    if f"{side}4" not in cols:
        return hi, lo
    v6 = (hi | lo) != 0
    return np.where(v6, hi, MAPPED_HI), np.where(v6, lo, mapped(cols[f"{side}4"]))


def flow_times(cols: dict[str, np.ndarray], meta: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) UNIX seconds of each record, from whichever time fields its template has (else the export time)."""
    export = meta["export"]
    end = flow_time(cols, "end", export, meta["uptime"], meta["sysinit"])
    end = export if end is None else end
    start = flow_time(cols, "start", export, meta["uptime"], meta["sysinit"])
    if start is None:
        start = end - cols["duration_ms"] / 1000.0 if "duration_ms" in cols else end
    return np.broadcast_to(np.asarray(start, np.float64), (len(export),)), np.broadcast_to(np.asarray(end, np.float64), (len(export),))


def flow_columns(cols: dict[str, np.ndarray], meta: dict[str, np.ndarray],
                 times: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The :data:`FLOW_DTYPE` fields of decoded records as separate arrays, one element per flow row.

    ``meta`` holds arrays aligned with the records: ``export`` (UNIX s), ``uptime``
    (exporter sysUptime in ms, -1 for IPFIX), ``sysinit`` (UNIX s, NaN unknown),
    ``exporter_hi``/``exporter_lo``, ``sampling``, ``version``. A record with RFC 5103
    reverse counters adds a second row, endpoints swapped, when they are non-zero.
    ``times``: (start, end) per record when the caller has already computed (and checked) them.
    Columns, not rows: every later step reads a few fields, and a field of a row table
    is a strided pass over all of it.
    """
    n = len(meta["export"])
    out: dict[str, np.ndarray] = {}
    out["start"], out["end"] = times if times is not None else flow_times(cols, meta)
    out["exporter_hi"], out["exporter_lo"] = meta["exporter_hi"], meta["exporter_lo"]
    for side in ("src", "dst"):
        out[f"{side}_hi"], out[f"{side}_lo"] = _address(cols, side, n)
    out["sport"] = _column(cols.get("sport", cols.get("sport_udp")), n, np.uint16)
    out["dport"] = _column(cols.get("dport", cols.get("dport_udp")), n, np.uint16)
    out["proto"] = _column(cols.get("proto"), n, np.uint8)
    out["vlan"] = (_column(cols.get("vlan", cols.get("vlan_dot1q")), n, np.uint64) & np.uint64(0x0FFF)).astype(np.uint16)
    out["packets"] = _column(cols.get("packets", cols.get("packets_total")), n, np.float64)
    out["bytes"] = _column(cols.get("bytes", cols.get("bytes_total")), n, np.float64)
    out["sampling"] = _column(meta["sampling"], n, np.float64)
    out["version"] = _column(meta["version"], n, np.uint8)
    rpackets = cols.get("rpackets", cols.get("rpackets_total"))
    if rpackets is None:
        return out
    forward, reverse = np.flatnonzero(out["packets"] > 0), np.flatnonzero(rpackets > 0)
    back = {name: column[reverse] for name, column in out.items()}
    for a, b in (("src_hi", "dst_hi"), ("src_lo", "dst_lo"), ("sport", "dport")):
        back[a], back[b] = back[b], back[a]
    back["packets"] = rpackets[reverse].astype(np.float64)
    rbytes = cols.get("rbytes", cols.get("rbytes_total"))
    back["bytes"] = rbytes[reverse].astype(np.float64) if rbytes is not None else np.zeros(len(reverse))
    return {name: np.concatenate([column[forward], back[name]]) for name, column in out.items()}


def _column(values: np.ndarray | float | None, n: int, dtype: type) -> np.ndarray:
    """``values`` (an array, a scalar, or None for 0) as ``n`` elements of ``dtype``, wrapping as a row
    table's field assignment does."""
    if values is None:
        return np.zeros(n, dtype)
    return np.broadcast_to(np.asarray(values).astype(dtype, copy=False), (n,))


def build(cols: dict[str, np.ndarray], meta: dict[str, np.ndarray],
          times: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """FLOW_DTYPE rows from decoded columns and per-record metadata (see :func:`flow_columns`)."""
    return pack(flow_columns(cols, meta, times))


def pack(columns: dict[str, np.ndarray]) -> np.ndarray:
    """FLOW_DTYPE rows of flow columns."""
    out = np.empty(len(columns["end"]), dtype=FLOW_DTYPE)
    for name in FLOW_DTYPE.names:
        out[name] = columns[name]
    return out


def ntp_mask(cols: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Which decoded records are UDP with port 123 on either side."""
    sport = cols.get("sport", cols.get("sport_udp"))
    dport = cols.get("dport", cols.get("dport_udp"))
    if "proto" not in cols or sport is None or dport is None:
        return np.zeros(n, dtype=bool)
    return (cols["proto"] == UDP) & ((sport == NTP_PORT) | (dport == NTP_PORT))


def ntp_observations(flows: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
    """OBS_DTYPE rows for the UDP/123 records of FLOW_DTYPE rows or of :func:`flow_columns`:
    counts sampling-corrected, ``ntp`` = 0."""
    ports = {name: flows[name] for name in ("proto", "sport", "dport")}
    return observations(flows, np.flatnonzero(ntp_mask(ports, len(ports["proto"]))))


def observations(flows: np.ndarray | dict[str, np.ndarray], keep: np.ndarray | slice = slice(None)) -> np.ndarray:
    """OBS_DTYPE rows for the records ``keep`` (default: all) of FLOW_DTYPE rows or of
    :func:`flow_columns`, which the caller has found to be UDP/123 (:func:`ntp_mask`):
    counts sampling-corrected, ``ntp`` = 0."""
    end = flows["end"][keep]
    rows = np.zeros(len(end), dtype=OBS_DTYPE)
    rows["time"] = end
    for name in ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "vlan"):
        rows[name] = flows[name][keep]
    sampling = flows["sampling"][keep]
    rows["packets"] = flows["packets"][keep] * sampling
    rows["bytes"] = flows["bytes"][keep] * sampling
    rows["flows"] = 1
    return rows


#: pcap LINKTYPE_ETHERNET: IPFIX dataLinkFrameSection and sFlow header protocol 1.
LINKTYPE_ETHERNET = 1


def frames_from(parts: list[tuple[list[bytes], np.ndarray, np.ndarray, np.ndarray | float]], linktype: int | np.ndarray = LINKTYPE_ETHERNET) -> Frames:
    """One Frames batch from groups of (frame bytes, wire length, time, weight)."""
    chunks = [f for frames, _, _, _ in parts for f in frames]
    caplen = np.array([len(f) for f in chunks], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.int64)
    n = len(chunks)

    def column(i: int, dtype: str) -> np.ndarray:
        return np.concatenate([np.broadcast_to(np.asarray(p[i], dtype=dtype), (len(p[0]),)) for p in parts])

    return Frames(
        data=np.frombuffer(b"".join(chunks), dtype=np.uint8),
        offset=offset,
        caplen=caplen,
        wirelen=np.maximum(column(1, "i8"), caplen),
        time=column(2, "f8"),
        linktype=np.broadcast_to(np.asarray(linktype, dtype=np.int64), (n,)).copy(),
        weight=column(3, "f8"),
    )


def fill_from_frames(rows: np.ndarray, frames: Frames) -> np.ndarray:
    """Rows (one per frame) whose endpoints, protocol and IP bytes come from their sampled frame's headers.

    Returns a boolean mask of the rows whose frame held an IP header; the others keep what they had.
    """
    found = ip_packets(frames)
    at = found.index
    for name in ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport"):
        rows[name][at] = getattr(found, name)
    rows["proto"][at] = found.proto
    rows["packets"][at] = np.where(rows["packets"][at] > 0, rows["packets"][at], 1)
    rows["bytes"][at] = np.where(rows["bytes"][at] > 0, rows["bytes"][at], found.ip_len)
    mask = np.zeros(len(rows), dtype=bool)
    mask[at] = True
    return mask
