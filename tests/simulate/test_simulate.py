"""The campus simulator: deterministic, labelled, and every client type looks like itself."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from netmon.batch import addr_halves, addr_text
from netmon.decode.encode import frames_from_observations
from netmon.decode.frames import decode_frames
from netmon.simulate import Scenario, generate
from netmon.simulate.events import Kind, Reply
from netmon.simulate.packets import RATE, server_transmit

SMALL = Scenario(hosts=80, days=0.3, seed=7)


@pytest.fixture(scope="module")
def sim():
    return generate(SMALL)


@pytest.fixture(scope="module")
def rows(sim):
    return np.concatenate(list(sim.batches()))


def digest(batches) -> str:
    h = hashlib.sha256()
    for rows in batches:
        h.update(rows.tobytes())
    return h.hexdigest()


def from_host(rows: np.ndarray, host: str) -> np.ndarray:
    hi, lo = addr_halves(host)
    return rows[(rows["src_hi"] == hi) & (rows["src_lo"] == lo)]


def to_host(rows: np.ndarray, host: str) -> np.ndarray:
    hi, lo = addr_halves(host)
    return rows[(rows["dst_hi"] == hi) & (rows["dst_lo"] == lo)]


def hosts_of(sim, kind: str) -> list[str]:
    return [h for h, d in sim.hosts.items() if d["kind"] == kind and "case" not in d]


def test_same_seed_gives_the_same_packets_and_labels_whatever_the_batch_size(sim, rows):
    again = generate(SMALL)
    assert again.labels == sim.labels
    assert digest(again.batches(chunk=7_777)) == digest([rows]), "batch size changed the packets"
    other = generate(Scenario(hosts=80, days=0.3, seed=8))
    assert digest(other.batches()) != digest([rows]), "a different seed gave the same traffic"


def test_packets_come_in_time_order_and_their_count_is_in_the_meta(sim, rows):
    assert np.all(np.diff(rows["time"]) >= 0), "the stream goes back in time"
    assert len(rows) == sim.meta()["rows"]
    assert rows["time"].min() >= sim.start and rows["time"].max() < sim.end + 1


def test_every_injected_case_is_labelled_with_traffic_inside_its_window(sim, rows):
    assert {c["case"] for c in sim.labels} == set(SMALL.cases)
    for case in sim.labels:
        sent = from_host(rows, case["host"])
        inside = sent[(sent["time"] >= case["start"]) & (sent["time"] <= case["end"])]
        assert len(inside), f"{case['case']} on {case['host']} sends nothing between its start and end"
        assert sim.hosts[case["host"]]["case"] == case["case"]


def test_ntpd_polls_from_port_123_and_echoes_the_last_server_transmit(sim, rows):
    host = next(h for h in hosts_of(sim, "ntpd") if not sim.hosts[h]["reboots"])
    sent = from_host(rows, host)
    assert set(sent["sport"].tolist()) == {123}
    assert set(sent["version"].tolist()) == {4}
    replies = to_host(rows, host)
    answered = set(replies["xmt_ts"][replies["mode"] == 4].tolist())
    linked = sent["org_ts"][sent["org_ts"] != 0]
    assert len(linked) > 3, "a steady ntpd sends origins"
    assert np.isin(linked, list(answered)).all(), "an ntpd origin names a transmit timestamp no server sent"
    gaps = np.diff(np.sort(sent["time"][sent["dst_lo"] == sent["dst_lo"][0]]))
    assert 900 < np.median(gaps) < 1100, "steady ntpd polls every ~1024 s"


def test_chrony_sends_zero_origin_random_transmit_and_a_new_port_each_time(sim, rows):
    host = hosts_of(sim, "chrony")[0]
    sent = from_host(rows, host)
    assert (sent["org_ts"] == 0).all()
    assert len(np.unique(sent["sport"])) > 0.9 * len(sent), "chrony reuses source ports"
    seconds = (sent["xmt_ts"] >> np.uint64(32)).astype(np.int64) - 2208988800
    assert np.abs(seconds - sent["time"]).max() > 86400, "chrony's transmit timestamp looks like a real clock"


def test_w32time_is_ntpv3_from_port_123_and_timesyncd_uses_random_ports(sim, rows):
    windows = np.concatenate([from_host(rows, h) for h in hosts_of(sim, "w32time")])
    assert set(windows["version"].tolist()) == {3} and set(windows["sport"].tolist()) == {123}
    timesyncd = np.concatenate([from_host(rows, h) for h in hosts_of(sim, "timesyncd")])
    assert (timesyncd["org_ts"] == 0).all() and len(np.unique(timesyncd["sport"])) > 1


def test_servers_answer_with_origin_copied_and_strict_ones_send_kod_rate(sim, rows):
    replies = rows[rows["mode"] == 4]
    requests = rows[rows["mode"] == 3]
    assert np.isin(replies["org_ts"][replies["org_ts"] != 0], requests["xmt_ts"]).all()
    kod = replies[replies["ref_id"] == RATE]
    assert len(kod), "no strict server sent KoD RATE"
    assert (kod["stratum"] == 0).all() and (kod["leap"] == 3).all()


def test_clients_that_honour_kod_back_off_while_the_runaway_does_not(sim):
    ev = sim.events
    for honour, expect_quiet in ((1, True), (0, False)):
        kod = np.nonzero((ev["reply"] == Reply.KOD_RATE) & (ev["honour"] == honour))[0]
        assert len(kod), f"no KoD for honour={honour}"
        gaps = []
        for i in kod[:200]:
            later = ev["time"][(ev["stream"] == ev["stream"][i]) & (ev["time"] > ev["time"][i])]
            if len(later):
                gaps.append(later.min() - ev["time"][i])
        if expect_quiet:
            assert min(gaps) >= 96, "a client that honours KoD sent again within 96 s"
        else:
            assert min(gaps) < 10, "the runaway should ignore KoD"


def test_the_incident_adds_one_daemon_an_hour_with_stale_origins(sim, rows):
    case = next(c for c in sim.labels if c["case"] == "incident")
    sent = from_host(rows, case["host"])
    assert set(sent["sport"].tolist()) == {123}
    after = sent[sent["time"] >= case["start"]]
    hours = ((after["time"] - case["start"]) // 3600).astype(int)
    per_hour = np.bincount(hours)[:-1]  # last hour is cut by the end of the run
    assert len(per_hour) >= 4 and (np.diff(per_hour) > 0).all(), f"requests per hour should grow: {per_hour}"
    replies = to_host(rows, case["host"])
    latest = np.searchsorted(replies["time"], after["time"]) - 1
    mismatched = after["org_ts"] != replies["xmt_ts"][np.maximum(latest, 0)]
    assert mismatched.mean() > 0.8, "origins of daemons sharing a socket should not match the latest reply"


def test_nat_gateway_is_one_address_with_many_client_ports(sim, rows):
    gateway = hosts_of(sim, "nat")[0]
    sent = from_host(rows, gateway)
    assert len(np.unique(sent["sport"])) >= 20


def test_dhcp_addresses_serve_laptops_of_different_kinds():
    sim = generate(Scenario(hosts=120, days=4, seed=3, cases=()))
    pool = {sim.book.index[h] for h in hosts_of(sim, "dhcp")}
    ev = sim.events
    mine = np.isin(ev["client"], list(pool))
    kinds_per_address = {}
    for client, kind in zip(ev["client"][mine].tolist(), ev["kind"][mine].tolist()):
        kinds_per_address.setdefault(client, set()).add(kind)
    assert any(len(k) > 1 for k in kinds_per_address.values()), "no DHCP address was reused by another client type"


def test_monlist_reflection_is_mode7_requests_in_and_large_trains_out(sim, rows):
    case = next(c for c in sim.labels if c["case"] == "reflector")
    out = from_host(rows, case["host"])
    responses = out[(out["mode"] == 7) & (out["ctl_response"] == 1)]
    requests = to_host(rows, case["host"])
    requests = requests[requests["mode"] == 7]
    assert (requests["ctl_code"] == 42).all() and len(requests)
    assert responses["bytes"].sum() > 100 * requests["bytes"].sum()


def test_rows_survive_the_wire_encoding_and_decoding(rows):
    sample = rows[:: max(1, len(rows) // 3000)]
    decoded = decode_frames(frames_from_observations(sample))
    assert len(decoded) == len(sample)
    for name in ("src_lo", "dst_lo", "sport", "dport", "mode", "version", "poll", "org_ts", "xmt_ts", "ref_id", "ctl_code"):
        assert np.array_equal(decoded[name], sample[name]), f"{name} changed on the wire"


def test_ipv6_hosts_get_a_prefix_each():
    sim = generate(Scenario(hosts=200, days=0.05, seed=1, cases=()))
    v6 = [h for h in sim.hosts if ":" in h]
    assert v6 and len({h.rsplit(":", 2)[0] for h in v6}) == len(v6)


def test_unknown_case_names_are_refused():
    with pytest.raises(ValueError, match="unknown case"):
        Scenario(cases=("nope",))


def test_kind_of_every_request_is_known(sim):
    assert set(np.unique(sim.events["kind"]).tolist()) <= {int(k) for k in Kind}
    assert addr_text(*addr_halves("10.20.0.1")) == "10.20.0.1"
    assert np.isfinite(server_transmit(np.array([sim.start]), np.array([0]), sim.book.arrays()["rtt"])).all()


def test_ntpd_origins_name_real_server_transmits_at_campus_scale():
    """Many streams must not blur the times origins are derived from (they are hashed)."""
    big = generate(Scenario(hosts=2000, days=0.04, seed=5, cases=()))
    rows = np.concatenate(list(big.batches()))
    sent_by_ntpd = np.isin(rows["sport"], (123,)) & (rows["mode"] == 3) & (rows["org_ts"] != 0) & (rows["version"] == 4)
    transmits = rows["xmt_ts"][rows["mode"] == 4]
    assert sent_by_ntpd.sum() > 1000
    assert np.isin(rows["org_ts"][sent_by_ntpd], transmits).all(), "an ntpd origin names no server transmit"


def test_a_nat_gateway_never_gives_two_fixed_port_clients_one_outside_port(monkeypatch):
    monkeypatch.setattr("netmon.simulate.campus.EPHEMERAL", (40000, 40061))  # scarce ports: collisions would show
    big = generate(Scenario(hosts=1500, days=0.3, seed=1, cases=()))
    ev = big.events
    gateways = [big.book.index[h] for h, d in big.hosts.items() if d["kind"] in ("nat", "vpn")]
    for gateway in gateways:
        mine = (ev["client"] == gateway) & np.isin(ev["kind"], (Kind.NTPD, Kind.W32TIME))
        spans: dict[tuple[int, int], dict[int, list[float]]] = {}
        for t, port, stream, server in zip(ev["time"][mine].tolist(), ev["sport"][mine].tolist(),
                                           ev["stream"][mine].tolist(), ev["server"][mine].tolist()):
            span = spans.setdefault((port, server), {}).setdefault(stream, [t, t])
            span[0], span[1] = min(span[0], t), max(span[1], t)
        for by_stream in spans.values():  # one client's reboots follow each other; two clients would overlap
            ordered = sorted(by_stream.values())
            assert all(a[1] < b[0] for a, b in zip(ordered, ordered[1:])), "two clients behind one gateway share an outside port"
