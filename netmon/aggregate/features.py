"""The features of one closed interval, from its observation rows, in numpy.

Each row is seen from the internal host's side: a row whose source is internal is
the host sending (direction "out"), a row whose destination is internal is the
host receiving ("in"); a row between two internal hosts counts for both. Rows
with NTP header data (``ntp == 1``) are classified by mode; flow records
(``ntp == 0``) by ports (outside port 123 = talking to a server) and contribute
only counts, so NTP-only features stay NaN for hosts seen only through flows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from netmon.aggregate import groups
from netmon.aggregate.keys import Names, PrefixSet, hash_key, roll_up
from netmon.aggregate.state import PairTable, Sockets, SocketTable
from netmon.batch import FEATURES, HostIntervals

#: Kiss-o'-Death reference IDs (ASCII as a big-endian uint32).
KOD_CODES = {"kod_rate": 0x52415445, "kod_deny": 0x44454E59, "kod_rstr": 0x52535452}
#: KoD codes that tell a client to stop (DENY, RSTR); RATE tells it to slow down.
STOP_CODES = (KOD_CODES["kod_deny"], KOD_CODES["kod_rstr"])
#: After a RATE KoD, a request sooner than this share of the advertised 2^poll
#: after the socket's previous request has not backed off.
KOD_BACKOFF = 0.5
#: Mode 7 request codes of the monitor list (MON_GETLIST, MON_GETLIST_1).
MONLIST_CODES = (20, 42)
#: Features that need the NTP header; NaN for a host-interval seen only in flow records.
NTP_ONLY = frozenset(
    {"instances", "poll", "rate_vs_poll", "interval_min", "after_kod", "org_zero", "org_match", "org_mismatch",
     "ctl_out", "ctl_in", "ctl_bytes_out", "ctl_bytes_in", "monlist_out", "amplification", "server_clients",
     "server_own_ports", "server_requests", "server_requests_eff", "server_kod", "server_clients_avg",
     "server_own_ports_avg"}
    | {k for k in KOD_CODES} | {"kod_other"}
    | {k for k in FEATURES if k.startswith(("mode", "version"))}
)
#: Poll exponent assumed when a request advertises none (poll 0: ntpsec's and many
#: SNTP clients' data-minimised requests): 6, the default minimum poll of ntpd and chrony.
UNADVERTISED_POLL = 6.0
#: Requests a socket may send fast when it starts (ntpd iburst and burst send 8):
#: their gaps do not count in its rate.
START_BURST = 8
#: Shortest gap (seconds) used in rates, so duplicated captures do not divide by zero.
MIN_GAP = 1e-3
#: A request to a server sooner than this (seconds) after the host's previous
#: request to it, on any socket, continues a start burst (iburst and boot-time
#: syncs send every 2 s) when the host's stream to that server is sparse.
BURST_GAP = 3.0
#: A request on a remembered socket within this factor of its advertised poll
#: after the socket's previous one comes from a client on a port of its own (a
#: client behind NAT): not from daemons sharing the port (sooner), nor from a
#: random port reused by chance (any time within the socket memory).
OWN_PORT_RATIO = 2.0


@dataclass(frozen=True)
class Campus:
    """The compiled campus config the feature code needs."""

    internal: PrefixSet
    groups: PrefixSet
    group_names: list[str]
    default_group: str
    ipv6_bits: int
    host_names: Names
    server_names: Names


#: The observation columns the features read, copied contiguous once per interval.
COLUMNS = ("time", "src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "packets", "bytes", "flows", "ntp",
           "leap", "version", "mode", "stratum", "poll", "ref_id", "org_ts", "rec_ts", "xmt_ts", "ctl_response",
           "ctl_code")


@dataclass
class View:
    """Rows seen from the internal host's side, in time order, as columns."""

    out: np.ndarray
    time: np.ndarray
    host_hi: np.ndarray
    host_lo: np.ndarray
    peer_hi: np.ndarray
    peer_lo: np.ndarray
    host_port: np.ndarray
    peer_port: np.ndarray
    peer_inside: np.ndarray
    rows: dict[str, np.ndarray]


def host_view(rows: np.ndarray, campus: Campus) -> View:
    """Each row once per internal end, time-ordered; host addresses rolled up."""
    src_in = campus.internal.contains(rows["src_hi"], rows["src_lo"])
    dst_in = campus.internal.contains(rows["dst_hi"], rows["dst_lo"])
    index = np.flatnonzero(src_in | dst_in)
    out = src_in[index]
    inside = src_in[index] & dst_in[index]
    both = np.flatnonzero(src_in & dst_in)
    if both.shape[0]:  # campus to campus: the receiving side too, kept in time order
        index = np.concatenate([index, both])
        out = np.concatenate([out, np.zeros(both.shape[0], bool)])
        inside = np.concatenate([inside, np.ones(both.shape[0], bool)])
        order = np.argsort(index, kind="stable")
        index, out, inside = index[order], out[order], inside[order]
    if index.shape[0] == rows.shape[0] and not both.shape[0]:
        r = {name: np.ascontiguousarray(rows[name]) for name in COLUMNS}
    else:  # per column: fancy indexing a structured array is several times slower
        r = {name: rows[name][index] for name in COLUMNS}
    host_hi, host_lo = roll_up(np.where(out, r["src_hi"], r["dst_hi"]), np.where(out, r["src_lo"], r["dst_lo"]),
                               campus.ipv6_bits)
    return View(
        out=out,
        time=r["time"],
        host_hi=host_hi,
        host_lo=host_lo,
        peer_hi=np.where(out, r["dst_hi"], r["src_hi"]),
        peer_lo=np.where(out, r["dst_lo"], r["src_lo"]),
        host_port=np.where(out, r["sport"], r["dport"]),
        peer_port=np.where(out, r["dport"], r["sport"]),
        peer_inside=inside,
        rows=r,
    )


def compute(rows: np.ndarray, start: float, end: float, campus: Campus, sockets: SocketTable) -> HostIntervals:
    """Feature rows for every internal host in ``rows`` (one interval), updating socket memory."""
    v = host_view(rows, campus)
    r = v.rows
    host_key = hash_key(v.host_hi, v.host_lo)
    _, first, host = np.unique(host_key, return_index=True, return_inverse=True)
    n = first.shape[0]
    weight, size = r["packets"], r["bytes"]
    ntp = r["ntp"] == 1
    mode = r["mode"]
    inward = ~v.out
    is_request = ntp & ((mode == 3) | (mode == 1))
    is_reply = ntp & (mode == 4)
    flow = ~ntp
    to_server = v.peer_port == 123
    as_server = (v.host_port == 123) & ~to_server
    request_out = v.out & (is_request | (flow & to_server))
    reply_in = inward & (is_reply | (flow & to_server))
    request_in = inward & (is_request | (flow & as_server))
    reply_out = v.out & (is_reply | (flow & as_server))

    def total(mask: np.ndarray, w: np.ndarray | None = weight) -> np.ndarray:
        return groups.total(host[mask], n, None if w is None else w[mask])

    f: dict[str, np.ndarray] = {
        "requests_out": total(request_out),
        "replies_in": total(reply_in),
        "requests_in": total(request_in),
        "replies_out": total(reply_out),
        "bytes_out": total(v.out, size),
        "bytes_in": total(inward, size),
        "flows": total(np.ones_like(ntp), r["flows"].astype(np.float64)),
    }
    # Counter rows past an eBPF sampling cap carry no peer (::) and no port (0):
    # they add packets and bytes, never a distinct server, client or port.
    peer_known = (v.peer_hi != 0) | (v.peer_lo != 0)
    peer_key = hash_key(host_key, v.peer_hi, v.peer_lo)
    servers_seen, clients_seen = request_out & peer_known, request_in & peer_known
    f["servers"] = groups.distinct(host[servers_seen], peer_key[servers_seen], n)
    f["clients"] = groups.distinct(host[clients_seen], peer_key[clients_seen], n)
    port_key = hash_key(host_key, v.host_port)
    ports_seen = request_out & (v.host_port != 0)
    f["client_ports"] = groups.distinct(host[ports_seen], port_key[ports_seen], n)
    ntp_request_out = request_out & ntp
    f["poll"] = groups.median(host[ntp_request_out], r["poll"][ntp_request_out].astype(np.float64), n)
    _modes_and_versions(f, host, n, ntp, v.out, mode, r["version"], weight)
    _kod_counts(f, host, n, reply_in & ntp & (r["leap"] == 3) & (r["stratum"] == 0), r["ref_id"], weight)
    _control(f, host, n, ntp & (mode >= 6), v.out, ~v.peer_inside, mode, r, weight, size)
    reply_bytes, request_bytes = total(reply_in, size), total(request_out, size)
    f["reply_ratio"] = np.divide(reply_bytes, request_bytes, out=np.full(n, np.nan), where=request_bytes > 0)
    _sockets(f, host, n, v, host_key, ntp_request_out, reply_in & ntp, r, weight, sockets, end - start, end)

    has_ntp = groups.total(host[ntp], n) > 0
    for name in NTP_ONLY:
        f[name][~has_ntp] = np.nan
    # a server answers: requests in alone are what internet-wide scanners send every address
    client = (f["requests_out"] + f["replies_in"]) > 0
    server = (f["replies_out"] + np.nan_to_num(f["ctl_out"])) > 0
    role = np.where(client & server, "both", np.where(server & ~client, "server", "client"))

    host_hi, host_lo = v.host_hi[first], v.host_lo[first]
    names = np.array(campus.host_names(host_key[first], host_hi, host_lo), dtype=object)
    group_index = campus.groups.first_match(host_hi, host_lo)
    labels = np.array(campus.group_names + [campus.default_group], dtype=object)
    group = labels[group_index].astype(str)
    features = {name: f[name] for name in FEATURES}
    return HostIntervals(start=start, end=end, host=names.astype(str), group=group, role=role, features=features,
                         servers_by_host=ServersByHost(names, host, v, campus.server_names, request_out, weight))


def _modes_and_versions(f: dict[str, np.ndarray], host: np.ndarray, n: int, ntp: np.ndarray, out: np.ndarray,
                        mode: np.ndarray, version: np.ndarray, weight: np.ndarray) -> None:
    for direction, mask in (("out", ntp & out), ("in", ntp & ~out)):
        counts = groups.total(host[mask] * 8 + mode[mask], 8 * n, weight[mask]).reshape(n, 8)
        for m in range(8):
            f[f"mode{m}_{direction}"] = counts[:, m].copy()
    sent = ntp & out
    counts = groups.total(host[sent] * 8 + (version[sent] & 7), 8 * n, weight[sent]).reshape(n, 8)
    for ver in range(1, 5):
        f[f"version{ver}_out"] = counts[:, ver].copy()


def _kod_counts(f: dict[str, np.ndarray], host: np.ndarray, n: int, kod: np.ndarray, ref_id: np.ndarray,
                weight: np.ndarray) -> None:
    known = np.zeros_like(kod)
    for name, code in KOD_CODES.items():
        mask = kod & (ref_id == code)
        known |= mask
        f[name] = groups.total(host[mask], n, weight[mask])
    other = kod & ~known
    f["kod_other"] = groups.total(host[other], n, weight[other])


def _control(f: dict[str, np.ndarray], host: np.ndarray, n: int, ctl: np.ndarray, out: np.ndarray,
             outside: np.ndarray, mode: np.ndarray, r: dict[str, np.ndarray], weight: np.ndarray,
             size: np.ndarray) -> None:
    """Mode 6/7 counts; monlist responses and amplification (response bytes sent over request bytes
    received, host as server) count outside peers only: an admin's ntpq on campus is no reflection."""
    response = r["ctl_response"] == 1
    for direction, mask in (("out", ctl & out), ("in", ctl & ~out)):
        f[f"ctl_{direction}"] = groups.total(host[mask], n, weight[mask])
        f[f"ctl_bytes_{direction}"] = groups.total(host[mask], n, size[mask])
    ctl = ctl & outside
    code = r["ctl_code"]
    monlist = ctl & out & response & (mode == 7) & ((code == MONLIST_CODES[0]) | (code == MONLIST_CODES[1]))
    f["monlist_out"] = groups.total(host[monlist], n, weight[monlist])
    sent = ctl & out & response
    asked = ctl & ~out & ~response
    sent_bytes = groups.total(host[sent], n, size[sent])
    asked_bytes = groups.total(host[asked], n, size[asked])
    f["amplification"] = np.divide(sent_bytes, asked_bytes, out=np.full(n, np.nan), where=asked_bytes > 0)


def _sockets(f: dict[str, np.ndarray], host: np.ndarray, n: int, v: View, host_key: np.ndarray,
             request: np.ndarray, reply: np.ndarray, r: dict[str, np.ndarray], weight: np.ndarray, table: SocketTable,
             interval: float, end: float) -> None:
    """Timing, origin and KoD features, which follow each socket's packets in time order.

    A request's gap is the time since the socket's previous request; the socket's
    rate against its poll uses the mean gap, which independent schedules sharing
    one socket (random phases) shorten in proportion to their number, leaving out
    the first :data:`START_BURST` requests of a client (iburst at boot). A request's
    origin is checked against the last reply that socket received before it
    (transmit timestamp, or receive timestamp for interleaved mode), for unsampled
    rows only. Gaps of sampled rows (sFlow) are between samples, so their rates
    err low: sampled telemetry never makes a socket look fast. It ignores a KoD when
    the socket received one within the hold-off before it and did not back off:
    any request after DENY or RSTR, or after RATE one sent sooner than half its
    advertised 2^poll after the socket's previous request. A client that starts
    afresh on the socket after the KoD (a request with zero origin and leap 3,
    unsynchronised: a reboot, or a NAT port reused by another client) begins a new
    association and is not held to it. A NAT gateway whose clients each honour
    their own KoD adds nothing, however many there are.
    """
    pick = np.flatnonzero(request | reply)
    socket_key = hash_key(host_key, v.peer_hi, v.peer_lo, v.host_port)[pick]
    order = np.argsort(socket_key, kind="stable")  # rows are time-ordered, so each run stays time-ordered
    pick, key = pick[order], socket_key[order]
    starts, run, row_start = groups.runs(key)
    is_req, is_rep = request[pick], reply[pick]
    t = v.time[pick]
    org, xmt, rec = r["org_ts"][pick], r["xmt_ts"][pick], r["rec_ts"][pick]
    is_kod = is_rep & (r["leap"][pick] == 3) & (r["stratum"][pick] == 0)
    known = table.lookup(key[starts], end - interval)

    prev, found = groups.last_before(is_req, row_start)
    prev_request = np.where(found, t[prev], known.request_time[run])
    gap = np.where(is_req, t - prev_request, np.nan)
    restart = is_req & (org == 0) & (r["leap"][pick] == 3)
    count = _association_counts(is_req, restart, run, starts, row_start, known.requests)
    steady_gap = np.where(count > START_BURST, gap, np.nan)

    prev, found = groups.last_before(is_rep, row_start)
    had_reply = found | ~np.isnan(known.reply_time[run])
    last_xmt = np.where(found, xmt[prev], known.reply_xmt[run])
    last_rec = np.where(found, rec[prev], known.reply_rec[run])
    zero = is_req & (org == 0)
    judged = is_req & ~zero & had_reply & (weight[pick] <= 1)  # a sampled row's last reply is rarely in the sample
    match = judged & ((org == last_xmt) | (org == last_rec))
    mismatch = judged & ~match

    prev, found = groups.last_before(is_kod, row_start)
    kod_time = np.where(found, t[prev], known.kod_time[run])
    ref_id = r["ref_id"][pick]
    stop = is_kod & ((ref_id == STOP_CODES[0]) | (ref_id == STOP_CODES[1]))
    kod_stop = np.where(found, stop[prev], known.kod_stop[run])
    poll = expected_poll(r["poll"][pick])
    not_backed_off = kod_stop | (gap < KOD_BACKOFF * np.exp2(poll))
    prev, found = groups.last_before(restart, row_start)
    restarted = np.where(restart, t, np.where(found, t[prev], -np.inf))
    after_kod = is_req & (t - kod_time <= table.kod_holdoff) & (restarted < kod_time) & not_backed_off

    h, w = host[pick], weight[pick]
    f["org_zero"] = groups.total(h[zero], n, w[zero])
    f["org_match"] = groups.total(h[match], n, w[match])
    f["org_mismatch"] = groups.total(h[mismatch], n, w[mismatch])
    f["after_kod"] = groups.total(h[after_kod], n, w[after_kod])
    f["interval_min"] = groups.extreme(h, gap, n, np.minimum)

    n_runs = starts.shape[0]
    socket_gap = groups.mean(run, steady_gap, n_runs)
    socket_poll = groups.median(run[is_req], poll[is_req], n_runs)
    socket_rate = np.exp2(socket_poll) / np.maximum(socket_gap, MIN_GAP)
    socket_host = h[starts]
    f["rate_vs_poll"] = groups.extreme(socket_host, socket_rate, n, np.maximum)
    first = pick[starts]
    summary = SocketSummary(socket_host, v.host_port[first], hash_key(v.peer_hi[first], v.peer_lo[first]),
                            socket_rate, socket_poll, groups.total(run[is_req], n_runs, w[is_req]))
    f["instances"] = _instances(summary, n, interval)
    period = np.exp2(poll)
    own_port = is_req & (gap * OWN_PORT_RATIO >= period) & (gap <= OWN_PORT_RATIO * period)
    _per_server(f, n, h, w, hash_key(host_key[pick], v.peer_hi[pick], v.peer_lo[pick]), t, poll, is_req, is_kod,
                own_port, interval, end, table.pairs)
    _remember(table, known, starts, is_req, is_rep, is_kod, stop, restart, count, t, xmt, rec)


def _association_counts(is_req: np.ndarray, restart: np.ndarray, run: np.ndarray, starts: np.ndarray,
                        row_start: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Each request's number on its socket since the socket was first seen or its client restarted.

    Rows are sorted by (socket, time); ``before`` is each socket's count from earlier intervals.
    """
    total = np.cumsum(is_req)
    at_start = total[starts] - is_req[starts]  # requests before each run
    running = total - at_start[run]  # this row's number within its run (requests only)
    prev, found = groups.last_before(restart, row_start)
    last_restart = np.where(restart, np.arange(is_req.shape[0]), np.where(found, prev, -1))
    since_restart = total - total[np.maximum(last_restart, 0)] + 1
    return np.where(last_restart >= 0, since_restart, before[run].astype(np.int64) + running)


def expected_poll(poll: np.ndarray) -> np.ndarray:
    """The poll exponent a request's timing is judged against (float64).

    A zero poll field says nothing (ntpsec 1.2 sends 0 on purpose, so do many SNTP
    devices): such requests are held to 64 s, the default minimum poll of ntpd and
    chrony. Other values, negative (sub-second LAN polling) included, are taken as sent.
    """
    return np.where(poll == 0, UNADVERTISED_POLL, poll.astype(np.float64))


def _poisson_rate(heads_rate: np.ndarray) -> np.ndarray:
    """The rate (per second) of a Poisson stream whose gaps of at least
    :data:`BURST_GAP` come at ``heads_rate``: the lower root x of x e^-x = c
    (x = rate * BURST_GAP, c = heads_rate * BURST_GAP), by Newton's method from
    below (the curve is concave there, so it converges without overshooting);
    c past the curve's top (1/e) gives x = 1."""
    c = np.minimum(heads_rate * BURST_GAP, np.exp(-1.0))
    x = c.copy()
    for _ in range(12):
        slope = np.exp(-x) * np.maximum(1.0 - x, 1e-3)
        x = np.minimum(x - (x * np.exp(-x) - c) / slope, 1.0)
    return x / BURST_GAP


def _per_server(f: dict[str, np.ndarray], n: int, h: np.ndarray, w: np.ndarray, pair: np.ndarray, t: np.ndarray,
                poll: np.ndarray, is_req: np.ndarray, is_kod: np.ndarray, own_port: np.ndarray,
                interval: float, end: float, pairs: PairTable) -> None:
    """Concurrent clients to each host's busiest server, across all its sockets.

    A client polling as it advertises sends one request per 2^poll s, so the
    client-seconds of a host's requests to one server (each request weighing its
    2^poll, poll 0 held to 64 s) over the interval length count the clients
    polling that server, whatever ports they use: one per request for chrony,
    all on port 123 for ntpd. A client's start burst (iburst, a boot-time
    one-shot sync: several requests 2 s apart) would count as several clients;
    on a sparse stream (mean gap above :data:`BURST_GAP`) only requests starting
    a run of gaps >= BURST_GAP count, scaled up by the share of a Poisson stream
    of that rate such gaps keep. A dense stream (many clients) is counted whole:
    its bursts are then a small part of it. Rows are in socket order, each socket
    time-ordered; sampled rows (weight > 1) are counted whole. ``pair`` is the
    rows' (host address, server) key: beside this interval's count, each pair's
    clients over the last ``pairs.window`` s come from ``pairs``, and the
    busiest pair over that window gives ``server_clients_avg``.

    ``server_requests_eff`` is what the estimate rests on, as equal requests:
    (sum of 2^poll)^2 / sum of 2^(2 poll), kept requests only. A request weighs
    its 2^poll, so one request of a client that advertises 2^15 s (w32time)
    adds 546 clients to a 60 s interval, on the word of one packet; a bound
    from the effective count (its Poisson spread) sees that, a bound from the
    raw count does not.
    """
    order = np.lexsort((t, pair))
    pair, t, w, poll, req, kod, own = pair[order], t[order], w[order], poll[order], is_req[order], is_kod[order], own_port[order]
    h = h[order]
    starts, run, row_start = groups.runs(pair)
    n_pairs = starts.shape[0]
    prev, found = groups.last_before(req, row_start)
    gap = np.where(req & found, t - t[prev], np.inf)
    head = req & ((gap >= BURST_GAP) | (w > 1))
    requests = groups.total(run[req], n_pairs, w[req])
    heads = groups.total(run[head], n_pairs, w[head])
    seconds = groups.total(run[req], n_pairs, (w * np.exp2(poll))[req])
    squares = groups.total(run[req], n_pairs, (w * np.exp2(2.0 * poll))[req])  # a sampled row: w requests
    own_seconds = groups.total(run[own], n_pairs, (w * np.exp2(poll))[own])
    sparse = requests * BURST_GAP < interval
    kept = np.where(sparse, np.minimum(_poisson_rate(heads / interval) * interval, requests), requests)
    share = np.divide(kept, requests, out=np.zeros(n_pairs), where=requests > 0)
    clients = share * seconds / interval
    own_clients = np.minimum(share * own_seconds / interval, clients)
    kods = groups.total(run[kod], n_pairs, w[kod])
    effective = share * np.divide(seconds * seconds, squares, out=np.zeros(n_pairs), where=squares > 0)
    pair_host = h[starts]
    period = np.divide(seconds, requests, out=np.full(n_pairs, interval), where=requests > 0)
    average, own_average = pairs.update(pair[starts], clients * interval, own_clients * interval, period, end, interval)
    best_average = groups.extreme(pair_host, average, n, np.maximum)
    top_average = np.full(n, -1, dtype=np.int64)
    is_top = average >= best_average[pair_host]
    top_average[pair_host[is_top]] = np.flatnonzero(is_top)
    best = groups.extreme(pair_host, clients, n, np.maximum)
    top = np.full(n, -1, dtype=np.int64)
    is_best = clients >= best[pair_host]  # ties: the last pair wins, all equal anyway
    top[pair_host[is_best]] = np.flatnonzero(is_best)
    has = np.flatnonzero(top >= 0)
    for name, column in (("server_clients", clients), ("server_own_ports", own_clients),
                         ("server_requests", requests), ("server_requests_eff", effective), ("server_kod", kods)):
        f[name] = np.zeros(n)
        f[name][has] = column[top[has]]
    has = np.flatnonzero(top_average >= 0)
    for name, column in (("server_clients_avg", average), ("server_own_ports_avg", own_average)):
        f[name] = np.zeros(n)
        f[name][has] = column[top_average[has]]


@dataclass
class SocketSummary:
    """Per-socket summary of one interval (aligned arrays)."""

    host: np.ndarray
    port: np.ndarray
    server: np.ndarray
    rate: np.ndarray
    poll: np.ndarray
    requests: np.ndarray


def _instances(s: SocketSummary, n: int, interval: float) -> np.ndarray:
    """Client instances per host: independent poll schedules, from timing.

    Ports whose requests come at least as fast as advertised count their fastest
    poll ratio over servers: one ntpd polling four servers from port 123 is one
    instance, 37 ntpd sharing port 123 poll 37 times faster than advertised, a
    NAT gateway's clients each poll at ratio 1 on their own port. Ports used once
    (random-port clients such as chrony: no gap) or slower than advertised (a port
    reused by chance) together count as their requests per server times 2^poll
    over the interval, at most one per port and at least one: a 50/s flood from
    random ports is ~50 schedules at poll 0, one chrony polling every 1024 s is one.
    """
    asked = s.requests > 0
    measured = asked & (s.rate >= 1.0)
    # by host, then port number: each host's ports summed in one order whatever its place among
    # the interval's hosts (a hash of that place ordered them differently in a partition's scorer)
    port_key = s.host.astype(np.uint64) << np.uint64(16) | s.port.astype(np.uint64)
    ports, inverse = np.unique(port_key[measured], return_inverse=True)
    per_port = np.zeros(ports.shape[0])
    np.maximum.at(per_port, inverse, np.fmax(s.rate[measured], 1.0))
    port_host = np.zeros(ports.shape[0], dtype=np.int64)
    port_host[inverse] = s.host[measured]
    count = groups.total(port_host, n, per_port)

    single = asked & ~measured & ~np.isin(port_key, ports)
    h = s.host[single]
    single_ports = groups.distinct(h, port_key[single], n)
    servers = groups.distinct(h, hash_key(h, s.server[single]), n)
    requests = groups.total(h, n, s.requests[single])
    poll = groups.median(h, s.poll[single], n)
    schedules = np.divide(requests * np.exp2(np.nan_to_num(poll)), interval * servers,
                          out=np.zeros(n), where=servers > 0)
    return count + np.where(single_ports > 0, np.clip(schedules, 1.0, np.maximum(single_ports, 1.0)), 0.0)


def _remember(table: SocketTable, known: Sockets, starts: np.ndarray, is_req: np.ndarray, is_rep: np.ndarray,
              is_kod: np.ndarray, stop: np.ndarray, restart: np.ndarray, count: np.ndarray, t: np.ndarray,
              xmt: np.ndarray, rec: np.ndarray) -> None:
    """Write each socket's latest request, reply and KoD back to the table; a restart after the KoD clears it."""
    if starts.shape[0] == 0:
        return
    update = known
    last, found = groups.last_in_run(is_req, starts)
    update.request_time = np.where(found, t[last], known.request_time)
    capped = np.minimum(count[last], np.iinfo(np.uint32).max)
    update.requests = np.where(found, capped, known.requests).astype(np.uint32)
    last, found = groups.last_in_run(is_rep, starts)
    update.reply_time = np.where(found, t[last], known.reply_time)
    update.reply_xmt = np.where(found, xmt[last], known.reply_xmt)
    update.reply_rec = np.where(found, rec[last], known.reply_rec)
    last, found = groups.last_in_run(is_kod, starts)
    update.kod_time = np.where(found, t[last], known.kod_time)
    update.kod_stop = np.where(found, stop[last], known.kod_stop)
    last, found = groups.last_in_run(restart, starts)
    update.kod_time = np.where(found & (t[last] > np.nan_to_num(update.kod_time, nan=-np.inf)), np.nan, update.kod_time)
    table.store(update, float(t.max()))


class ServersByHost(Mapping):
    """host text -> {server text: requests}, built on first use.

    Most intervals are never asked (the allowlist rule is off by default), and
    building it is Python work per (host, server) pair, so the columns are kept
    and the mapping is made only when read.
    """

    def __init__(self, names: np.ndarray, host: np.ndarray, v: View, server_names: Names, request_out: np.ndarray,
                 weight: np.ndarray) -> None:
        sent = np.flatnonzero(request_out)
        self._args = (names, host[sent], v.peer_hi[sent], v.peer_lo[sent], weight[sent], server_names)
        self._built: dict[str, dict[str, float]] | None = None

    def _mapping(self) -> dict[str, dict[str, float]]:
        if self._built is None:
            names, host, peer_hi, peer_lo, weight, server_names = self._args
            server_key = hash_key(peer_hi, peer_lo)
            pairs, first, inverse = np.unique(hash_key(host, server_key), return_index=True, return_inverse=True)
            counts = np.bincount(inverse, weights=weight, minlength=pairs.shape[0])
            servers = server_names(server_key[first], peer_hi[first], peer_lo[first])
            built: dict[str, dict[str, float]] = {}
            for owner, server, count in zip(names[host[first]].tolist(), servers, counts.tolist()):
                built.setdefault(owner, {})[server] = count
            self._built, self._args = built, ()
        return self._built

    def __getitem__(self, host: str) -> dict[str, float]:
        return self._mapping()[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())
