"""Request events to observation rows: the requests, the replies, KoD and monlist trains.

Every wire field is a function of the event row alone (and a hash of it, never a
random generator's running state), so a batch can be built from any slice of the
time-sorted events and the output does not depend on the batch size.

What the fields say, by client kind (see ``netmon.simulate.events.Kind``):

* ntpd: version 4 from port 123, origin = the transmit timestamp of the last reply
  this instance accepted, unsynchronised (LI 3, stratum 0) until its first reply;
* chrony: zero origin, random transmit timestamp, other header fields zero;
* timesyncd and one-shot syncs: SNTP with zero origin, real transmit time;
* w32time: version 3 from port 123;
* the replies copy the request's transmit timestamp into their origin, as servers
  do; a KoD RATE has LI 3, stratum 0, reference ID ``RATE`` and echoes that
  timestamp in its receive and transmit fields too.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from netmon.batch import OBS_DTYPE
from netmon.simulate.events import Kind, Org, Reply, last_before

NTP_EPOCH = 2208988800
RATE = int.from_bytes(b"RATE", "big")
MON_GETLIST_1 = 42
MONLIST_TRAIN = 30  # response packets per monlist request (6 entries each)
MONLIST_LEN = 440  # 8-byte mode 7 header + 6 entries of 72 bytes
SERVER_TURNAROUND = 30e-6  # seconds between a server's receive and transmit timestamps

#: per Kind value: (mode, version, payload bytes, precision)
_KIND_FIELDS = np.zeros((len(Kind) + 1, 4), dtype=np.int64)
for _kind, _fields in {
    Kind.NTPD: (3, 4, 48, -23),
    Kind.CHRONY: (3, 4, 48, 0),
    Kind.TIMESYNCD: (3, 4, 48, 0),
    Kind.W32TIME: (3, 3, 48, -23),
    Kind.SNTP: (3, 4, 48, -20),
    Kind.IOT: (3, 3, 48, 0),
    Kind.FLOOD: (3, 3, 48, 0),
    Kind.MONLIST: (7, 2, 8, 0),
}.items():
    _KIND_FIELDS[_kind] = _fields


def mix(values: np.ndarray, salt: int = 0) -> np.ndarray:
    """splitmix64 of ``values`` (uint64): a deterministic per-row pseudo-random word."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (salt + 1)) & 0xFFFF_FFFF_FFFF_FFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit(time: np.ndarray, salt: int) -> np.ndarray:
    """A uniform [0, 1) value per time, the same whenever the same time is seen."""
    return (mix(time.view(np.uint64), salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def ntp_time(seconds: np.ndarray) -> np.ndarray:
    """UNIX seconds as raw 64-bit NTP timestamps (era 0)."""
    whole = np.floor(seconds)
    frac = np.minimum((seconds - whole) * 4294967296.0, 4294967295.0)
    return ((whole + NTP_EPOCH).astype(np.uint64) << np.uint64(32)) | frac.astype(np.uint64)


def one_way(time: np.ndarray, server: np.ndarray, rtt: np.ndarray) -> np.ndarray:
    """Seconds from the edge to the server for a request seen at ``time`` (half its round trip)."""
    return 0.5 * rtt[server] * (1.0 + 0.2 * unit(time, 1))


def server_transmit(time: np.ndarray, server: np.ndarray, rtt: np.ndarray) -> np.ndarray:
    """The transmit timestamp (UNIX seconds) of the reply to a request seen at ``time``."""
    return time + one_way(time, server, rtt) + SERVER_TURNAROUND


def link_origins(events: dict[str, np.ndarray]) -> None:
    """Fill ``prev``: whose reply each ntpd-style request's origin copies.

    CHAIN: the latest request of the same stream that drew a normal reply.
    STALE (daemons sharing one socket): a request a few answered replies back
    from the same host, so the origin names something the server did send, but
    not the latest.
    """
    answered = events["reply"] == Reply.NORMAL
    prev = np.full(len(events["time"]), np.nan)
    chain = events["org"] == Org.CHAIN
    if chain.any():
        prev = np.where(chain, last_before(events["stream"], events["time"], answered), prev)
    stale = np.nonzero(events["org"] == Org.STALE)[0]
    if len(stale):
        client = events["client"]
        hosts = np.isin(client, np.unique(client[stale]))
        pool = np.nonzero(hosts & answered)[0]
        pool = pool[np.lexsort((events["time"][pool], client[pool]))]
        low = events["time"].min()

        def key(index: np.ndarray) -> np.ndarray:  # client, then time in microseconds: exact integers
            micros = np.rint((events["time"][index] - low) * 1e6).astype(np.int64)
            return (client[index].astype(np.int64) << 42) | micros

        at = np.searchsorted(key(pool), key(stale))
        back = at - 2 - (mix(np.asarray(stale, dtype=np.uint64), 7) % np.uint64(5)).astype(np.int64)
        ok = back >= 0
        ok[ok] = client[pool[back[ok]]] == client[stale[ok]]
        prev[stale[ok]] = events["time"][pool[back[ok]]]
    events["prev"] = prev


def _address(rows: np.ndarray, side: str, index: np.ndarray, book: dict[str, np.ndarray]) -> None:
    rows[f"{side}_hi"] = book["hi"][index]
    rows[f"{side}_lo"] = book["lo"][index]


def _ip_bytes(book: dict[str, np.ndarray], index: np.ndarray, ntp_len: np.ndarray) -> np.ndarray:
    return np.where(book["v6"][index], 40, 20) + 8 + ntp_len


def requests(ev: dict[str, np.ndarray], book: dict[str, np.ndarray]) -> np.ndarray:
    """One observation row per request event."""
    n = len(ev["time"])
    rows = np.zeros(n, dtype=OBS_DTYPE)
    kind = ev["kind"].astype(np.int64)
    fields = _KIND_FIELDS[kind]
    t = ev["time"]
    rows["time"] = t
    _address(rows, "src", ev["client"], book)
    _address(rows, "dst", ev["server"], book)
    rows["sport"] = ev["sport"]
    rows["dport"] = 123
    rows["packets"] = 1.0
    rows["ntp"] = 1
    rows["mode"] = fields[:, 0]
    rows["version"] = fields[:, 1]
    rows["ntp_len"] = fields[:, 2]
    rows["precision"] = fields[:, 3]
    rows["bytes"] = _ip_bytes(book, ev["client"], fields[:, 2])
    rows["poll"] = ev["poll"]
    monlist = kind == Kind.MONLIST
    rows["ctl_code"] = np.where(monlist, MON_GETLIST_1, 0)
    rows["poll"][monlist] = 0

    stamp = mix(t.view(np.uint64), 3)
    xmt = ntp_time(t) ^ (stamp & np.uint64(0xFF))  # ntpd fuzzes the bits below its precision
    rows["xmt_ts"] = np.where(kind == Kind.CHRONY, mix(t.view(np.uint64), 5), xmt)
    rows["xmt_ts"][np.isin(kind, (Kind.FLOOD, Kind.MONLIST))] = 0

    org = ev["org"]
    prev = ev["prev"]
    linked = np.isin(org, (Org.CHAIN, Org.STALE)) & np.isfinite(prev)
    safe_prev = np.where(linked, prev, t)
    rows["org_ts"] = np.where(linked, ntp_time(server_transmit(safe_prev, ev["server"], book["rtt"])), 0)
    rows["org_ts"] = np.where(org == Org.RANDOM, mix(t.view(np.uint64), 9), rows["org_ts"])
    rows["org_ts"][(org == Org.STALE) & ~np.isfinite(prev)] = mix(t.view(np.uint64), 9)[(org == Org.STALE) & ~np.isfinite(prev)]

    daemon = kind == Kind.NTPD
    synced = daemon & np.isfinite(prev)
    rows["leap"] = np.where(daemon & ~synced, 3, 0)
    rows["stratum"] = np.where(synced, np.minimum(book["stratum"][ev["server"]].astype(np.int64) + 1, 15), 0)
    rows["ref_id"] = np.where(synced, (book["lo"][ev["server"]] & np.uint64(0xFFFF_FFFF)).astype(np.uint32), 0)
    rows["ref_ts"] = np.where(synced, ntp_time(safe_prev), 0)
    rows["root_delay"] = np.where(synced, 0x200 + (stamp >> np.uint64(20)) % np.uint64(0x600), 0)
    rows["root_disp"] = np.where(synced, 0x300 + (stamp >> np.uint64(40)) % np.uint64(0x900), 0)
    return rows


def replies(ev: dict[str, np.ndarray], req: np.ndarray, book: dict[str, np.ndarray]) -> np.ndarray:
    """The server's answers to ``ev`` (aligned request rows ``req``): replies, KoD, monlist trains."""
    reply = ev["reply"]
    single = np.nonzero((reply == Reply.NORMAL) | (reply == Reply.KOD_RATE))[0]
    train = np.nonzero(reply == Reply.MONLIST)[0]
    index = np.concatenate((single, np.repeat(train, MONLIST_TRAIN)))
    position = np.concatenate((np.zeros(len(single)), np.tile(np.arange(MONLIST_TRAIN), len(train))))
    rows = np.zeros(len(index), dtype=OBS_DTYPE)
    if len(index) == 0:
        return rows
    t = ev["time"][index]
    server = ev["server"][index]
    client = ev["client"][index]
    away = one_way(t, server, book["rtt"])
    rows["time"] = t + 2 * away + SERVER_TURNAROUND + position * 50e-6
    _address(rows, "src", server, book)
    _address(rows, "dst", client, book)
    rows["sport"] = 123
    rows["dport"] = ev["sport"][index]
    rows["packets"] = 1.0
    rows["ntp"] = 1
    kod = reply[index] == Reply.KOD_RATE
    monlist = reply[index] == Reply.MONLIST
    rows["version"] = req["version"][index]
    rows["mode"] = np.where(monlist, 7, 4)
    rows["ctl_response"] = monlist
    rows["ctl_code"] = np.where(monlist, MON_GETLIST_1, 0)
    rows["ntp_len"] = np.where(monlist, MONLIST_LEN, 48)
    rows["bytes"] = _ip_bytes(book, server, rows["ntp_len"].astype(np.int64))
    plain = ~monlist
    rows["leap"] = np.where(kod, 3, 0)
    rows["stratum"] = np.where(kod | monlist, 0, book["stratum"][server])
    rows["ref_id"] = np.where(kod, RATE, np.where(monlist, 0, book["ref_id"][server]))
    rows["poll"] = np.where(plain, np.maximum(req["poll"][index], 3), 0)
    rows["precision"] = np.where(plain, -20, 0)
    rows["root_delay"] = np.where(plain & ~kod, 0x10 + (book["stratum"][server].astype(np.int64) - 1) * 0x200, 0)
    rows["root_disp"] = np.where(plain & ~kod, 0x20 + (book["stratum"][server].astype(np.int64) - 1) * 0x300, 0)
    answered = plain & ~kod
    rows["ref_ts"] = np.where(answered, ntp_time(t - 16.0 - 600.0 * unit(t, 11)), 0)
    rows["org_ts"] = np.where(plain, req["xmt_ts"][index], 0)
    # ntpd's KoD echoes the client's transmit timestamp in origin, receive and transmit
    echo = req["xmt_ts"][index]
    rows["rec_ts"] = np.where(answered, ntp_time(t + away), np.where(kod, echo, 0))
    rows["xmt_ts"] = np.where(answered, ntp_time(t + away + SERVER_TURNAROUND), np.where(kod, echo, 0))
    return rows


def batches(
    events: dict[str, np.ndarray], book: dict[str, np.ndarray], chunk: int = 50_000
) -> Iterator[np.ndarray]:
    """Observation rows in time order, in batches built from ``chunk`` time-sorted events.

    Replies that fall after the next chunk's first request wait for that batch, so
    the stream never goes back in time.
    """
    n = len(events["time"])
    held = np.zeros(0, dtype=OBS_DTYPE)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        ev = {name: column[lo:hi] for name, column in events.items()}
        req = requests(ev, book)
        rows = np.concatenate((held, req, replies(ev, req, book)))
        rows = rows[np.argsort(rows["time"], kind="stable")]
        if hi < n:
            cut = np.searchsorted(rows["time"], events["time"][hi], side="left")
            rows, held = rows[:cut], rows[cut:]
        else:
            held = np.zeros(0, dtype=OBS_DTYPE)
        if len(rows):
            yield rows
    if len(held):
        yield held


def reply_count(events: dict[str, np.ndarray]) -> int:
    """How many reply rows ``events`` will produce."""
    reply = events["reply"]
    return int(np.count_nonzero((reply == Reply.NORMAL) | (reply == Reply.KOD_RATE))) + MONLIST_TRAIN * int(
        np.count_nonzero(reply == Reply.MONLIST)
    )
