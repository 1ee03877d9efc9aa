"""NTP (RFC 5905, v1-v4) headers for whole batches, and the conversions everyone uses.

:func:`decode_ntp` reads every UDP/123 payload of a batch at once with numpy:
the 48-byte header of modes 1-5 (leap, version, mode, stratum, poll, precision,
root delay and dispersion raw, reference ID, the four timestamps raw), extension
fields and MAC after it (RFC 7822 rules), the mode 6 control header (R bit,
opcode) and the mode 7 private header (R bit, request code; 42 MON_GETLIST_1 and
20 MON_GETLIST are "monlist"). Payloads on port 123 that are not NTP are counted
as ``decode.skip.not_ntp``; a header cut by the capture as ``decode.skip.truncated``;
a modes 1-5 packet whose bytes after the header are neither extension fields nor a
MAC (an odd length, say) as ``decode.skip.bad_extension``.

Conversions: :func:`ntp_to_unix` (timestamps, era by the peers' rule),
:func:`short_to_seconds`, :func:`ref_id_text`, :func:`kod_code` / :func:`is_kod`.
"""

from __future__ import annotations

import numpy as np

from netmon import health

#: seconds from the NTP epoch (1900-01-01) to the UNIX epoch (1970-01-01)
NTP_UNIX_OFFSET = 2_208_988_800
#: request codes of mode 7 that ask for the monitor list ("monlist")
MON_GETLIST, MON_GETLIST_1 = 20, 42
#: the longest MAC: a 4-byte key ID and a 20-byte SHA-1 digest (RFC 7822 section 3)
MAX_MAC = 24
#: the longest digest accepted in a MAC that is not an extension field (SHA-512)
MAX_DIGEST = 64
MAX_EXTENSIONS = 32
HEADER = 48
CONTROL_HEADER, PRIVATE_HEADER = 12, 8

KOD_RATE = int.from_bytes(b"RATE", "big")
KOD_DENY = int.from_bytes(b"DENY", "big")
KOD_RSTR = int.from_bytes(b"RSTR", "big")

NTP_FIELDS = (
    "leap", "version", "mode", "stratum", "poll", "precision", "root_delay", "root_disp", "ref_id",
    "ref_ts", "org_ts", "rec_ts", "xmt_ts", "num_exts", "mac_len", "ctl_response", "ctl_code",
)


def _gather(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    last = max(len(data) - 1, 0)
    source = data if len(data) else np.zeros(1, dtype=np.uint8)
    return source[np.minimum(at[:, None] + np.arange(width, dtype=np.int64), last)]


def _be(matrix: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(matrix).view(dtype).reshape(len(matrix))


def _trailer(data: np.ndarray, at: np.ndarray, length: np.ndarray, captured: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(num_exts, mac_len, valid) of the bytes after a 48-byte header (RFC 7822).

    While more than ``MAX_MAC`` bytes remain, the next bytes are taken as an
    extension field if they look like one (length >= 16, a multiple of 4, inside
    the packet). What is left is the MAC: empty, a 4-byte crypto-NAK, or a key ID
    and a digest (MD5 16, SHA-1 20, up to ``MAX_DIGEST`` bytes for newer digests;
    Wireshark and scapy read such a tail as a MAC too). Anything else (an odd
    length, a tail longer than any MAC) is not NTP. A payload the capture cut
    short is parsed as far as it was captured and not judged.
    """
    n = len(at)
    exts = np.zeros(n, dtype=np.int64)
    pos = np.full(n, HEADER, dtype=np.int64)
    parsing = np.ones(n, dtype=bool)
    cut = captured < length
    for _ in range(MAX_EXTENSIONS):
        more = parsing & (length - pos > MAX_MAC) & (pos + 4 <= captured)
        if not more.any():
            break
        field = _gather(data, at[more] + pos[more] + 2, 2).astype(np.int64)
        size = field[:, 0] << 8 | field[:, 1]
        ok = (size >= 16) & (size % 4 == 0) & (pos[more] + size <= length[more])
        rows = np.flatnonzero(more)
        parsing[rows[~ok]] = False
        exts[rows[ok]] += 1
        pos[rows[ok]] += size[ok]
    mac = length - pos
    valid = cut | (mac == 0) | ((mac % 4 == 0) & (mac >= 4) & (mac <= 4 + MAX_DIGEST))
    return exts, np.where(valid & ~cut, mac, 0), valid


def decode_ntp(data: np.ndarray, at: np.ndarray, length: np.ndarray, captured: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Fill the NTP columns of ``rows`` (OBS_DTYPE) from the payloads; return which are NTP.

    ``at`` is each payload's position in ``data``, ``length`` its UDP payload
    length on the wire, ``captured`` how many of its bytes are in ``data``.
    Rows that are not NTP keep ``ntp = 0``; the caller drops them.
    """
    at = at.astype(np.int64)
    length = length.astype(np.int64)
    captured = captured.astype(np.int64)
    head = _gather(data, at, HEADER)
    head = np.where(np.arange(HEADER)[None, :] < captured[:, None], head, 0).astype(np.uint8)
    first = head[:, 0]
    mode = first & 7
    version = (first >> 3) & 7
    control, private = mode == 6, mode == 7
    minimum = np.where(control, CONTROL_HEADER, np.where(private, PRIVATE_HEADER, HEADER))
    plausible = (version >= 1) & (version <= 4) & (mode >= 1) & (length >= minimum)
    truncated = plausible & (captured < minimum)
    ntp = plausible & ~truncated

    standard = ntp & (mode <= 5)
    exts, mac, trailer_ok = _trailer(data, at, length, captured)
    bad_trailer = standard & ~trailer_ok
    ntp &= ~bad_trailer
    standard &= ~bad_trailer
    for reason, mask in (("not_ntp", ~plausible), ("truncated", truncated), ("bad_extension", bad_trailer)):
        if mask.any():
            health.count(f"decode.skip.{reason}", int(np.count_nonzero(mask)))

    rows["ntp"] = ntp
    rows["version"] = np.where(ntp, version, 0)
    rows["mode"] = np.where(ntp, mode, 0)
    rows["leap"] = np.where(ntp & ~private, first >> 6, 0)
    rows["ntp_len"] = length
    s = standard
    rows["stratum"] = np.where(s, head[:, 1], 0)
    rows["poll"] = np.where(s, head[:, 2].view(np.int8), 0)
    rows["precision"] = np.where(s, head[:, 3].view(np.int8), 0)
    rows["root_delay"] = np.where(s, _be(head[:, 4:8], ">u4"), 0)
    rows["root_disp"] = np.where(s, _be(head[:, 8:12], ">u4"), 0)
    rows["ref_id"] = np.where(s, _be(head[:, 12:16], ">u4"), 0)
    for col, name in ((16, "ref_ts"), (24, "org_ts"), (32, "rec_ts"), (40, "xmt_ts")):
        rows[name] = np.where(s, _be(head[:, col:col + 8], ">u8"), np.uint64(0))
    rows["num_exts"] = np.where(s, np.minimum(exts, 255), 0)
    rows["mac_len"] = np.where(s, mac, 0)
    rows["ctl_response"] = np.where(control, head[:, 1] >> 7, np.where(private, first >> 7, 0)) * ntp
    rows["ctl_code"] = np.where(control, head[:, 1] & 0x1F, np.where(private, head[:, 3], 0)) * ntp
    return ntp


# ---------------------------------------------------------------------------- conversions


def ntp_to_unix(raw: np.ndarray | int) -> np.ndarray:
    """Raw 32.32 NTP timestamps to UNIX seconds (float64); 0 stays 0 (unset).

    Era: a timestamp with the most significant bit clear is placed in era 1
    (after 2036-02-07), as tcpdump and Wireshark do (RFC 5905 section 6 and
    RFC 4330's rule); with the bit set it is in era 0 (1968-2036).
    """
    raw = np.asarray(raw, dtype=np.uint64)
    seconds = (raw >> np.uint64(32)).astype(np.float64)
    fraction = (raw & np.uint64(0xFFFF_FFFF)).astype(np.float64) / 4294967296.0
    era1 = (raw >> np.uint64(63)) == 0
    unix = seconds + fraction + np.where(era1, 4294967296.0, 0.0) - NTP_UNIX_OFFSET
    return np.where(raw == 0, 0.0, unix)


def short_to_seconds(raw: np.ndarray | int) -> np.ndarray:
    """NTP short format (unsigned 16.16 fixed point: root delay, root dispersion) to seconds."""
    return np.asarray(raw, dtype=np.float64) / 65536.0


def ref_id_text(stratum: int, ref_id: int) -> str:
    """A reference ID as people read it.

    Stratum >= 2: the IPv4 address of the upstream server (for IPv6 upstreams it is
    the first 4 bytes of an MD5 hash, still printed as a dotted quad, as peers do).
    Stratum 0 (KoD code) and 1 (refclock code): the ASCII code with trailing NULs
    removed, non-printable bytes as ``\\xNN``.
    """
    raw = int(ref_id).to_bytes(4, "big")
    if stratum >= 2:
        return ".".join(str(b) for b in raw)
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in raw.rstrip(b"\0"))


def kod_code(ref_id: int) -> str:
    """The kiss code of a reference ID (``RATE``, ``DENY``, ...), NULs removed."""
    return int(ref_id).to_bytes(4, "big").rstrip(b"\0").decode("ascii", "replace")


def is_kod(rows: np.ndarray) -> np.ndarray:
    """Kiss-o'-Death packets: server replies (mode 4, or 2) with LI=3 and stratum 0 (RFC 5905 section 7.4)."""
    return (rows["ntp"] == 1) & np.isin(rows["mode"], (2, 4)) & (rows["leap"] == 3) & (rows["stratum"] == 0)


def is_monlist(rows: np.ndarray) -> np.ndarray:
    """Mode 7 MON_GETLIST or MON_GETLIST_1 packets (requests or responses)."""
    return (rows["mode"] == 7) & np.isin(rows["ctl_code"], (MON_GETLIST, MON_GETLIST_1))
