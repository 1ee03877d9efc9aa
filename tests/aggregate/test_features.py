"""Per-host features from crafted observation rows: each feature pinned by a behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netmon import health
from netmon.aggregate import Aggregator
from netmon.aggregate.state import SOCKET_TTL
from netmon.batch import FEATURES
from tests.aggregate.craft import Traffic, by_host, campus, settings

HOST, SERVER, SERVER2 = "10.0.0.5", "192.0.2.1", "192.0.2.2"


def run(traffic: Traffic, camp=None, agg=None, batches: int = 1):
    aggregator = Aggregator(camp or campus(), agg or settings())
    rows = traffic.rows()
    closed = []
    for part in np.array_split(rows, batches):
        closed += aggregator.add(part)
    return closed + aggregator.flush()


def one(traffic: Traffic, host: str = HOST, index: int = 0, **kw) -> dict[str, float]:
    found = by_host(run(traffic, **kw), host)
    assert found, f"no interval for {host}"
    return found[index]


def test_every_feature_column_is_produced_for_every_host():
    t = Traffic()
    t.ntpd(HOST, SERVER, 0, 50)
    (iv,) = run(t)
    assert set(iv.features) == set(FEATURES)
    assert all(col.shape == (len(iv),) and col.dtype == np.float64 for col in iv.features.values())


def test_requests_out_and_replies_in_counted_by_direction_with_bytes():
    t = Traffic()
    for i in range(3):
        t.request(i * 10.0, HOST, SERVER, 123)
        t.reply(i * 10.0 + 0.01, SERVER, HOST, 123)
    f = one(t)
    assert (f["requests_out"], f["replies_in"], f["requests_in"], f["replies_out"]) == (3, 3, 0, 0)
    assert f["bytes_out"] == 3 * 76 and f["bytes_in"] == 3 * 76
    assert f["reply_ratio"] == pytest.approx(1.0)
    assert f["role"] == "client"


def test_packet_weight_scales_counts_for_sampled_rows():
    t = Traffic()
    t.packet(1.0, HOST, SERVER, 123, 123, mode=3, packets=1000.0, bytes=76000.0)
    f = one(t)
    assert f["requests_out"] == 1000 and f["bytes_out"] == 76000


def test_distinct_servers_and_client_ports():
    t = Traffic()
    for port in (40000, 40001, 40002):
        t.request(1.0, HOST, SERVER, port)
    t.request(2.0, HOST, SERVER2, 40000)
    f = one(t)
    assert f["servers"] == 2 and f["client_ports"] == 3


def test_servers_by_host_lists_requests_per_server():
    t = Traffic()
    t.request(1.0, HOST, SERVER)
    t.request(2.0, HOST, SERVER)
    t.request(3.0, HOST, SERVER2)
    (iv,) = run(t)
    assert iv.servers_by_host == {HOST: {SERVER: 2.0, SERVER2: 1.0}}


def test_origin_copying_the_last_reply_transmit_timestamp_matches():
    t = Traffic()
    t.ntpd(HOST, SERVER, 0, 64 * 5, poll=6, origin="chain")
    features = by_host(run(t), HOST)
    assert sum(f["org_match"] for f in features) == 4  # the first request has nothing to copy: zero origin
    assert sum(f["org_mismatch"] for f in features) == 0
    assert sum(f["org_zero"] for f in features) == 1


def test_random_origins_count_as_mismatch():
    t = Traffic()
    t.ntpd(HOST, SERVER, 0, 64 * 5, poll=6, origin="random")
    features = by_host(run(t), HOST)
    assert sum(f["org_mismatch"] for f in features) == 4, "every request after the first reply mismatches"
    assert sum(f["org_match"] for f in features) == 0


def test_zero_origin_of_data_minimising_clients_is_counted_apart():
    t = Traffic()
    t.ntpd(HOST, SERVER, 0, 64 * 5, poll=6, port=40000, origin="zero")
    features = by_host(run(t), HOST)
    assert sum(f["org_zero"] for f in features) == 5
    assert sum(f["org_mismatch"] + f["org_match"] for f in features) == 0


def test_interleaved_origin_equal_to_the_reply_receive_timestamp_matches():
    t = Traffic()
    first = t.request(0.0, HOST, SERVER, 40000)
    reply = t.reply(0.01, SERVER, HOST, 40000, org=first)
    t.request(16.0, HOST, SERVER, 40000, org=reply - 1)  # craft: rec_ts = xmt - 1
    f = one(t)
    assert f["org_match"] == 1 and f["org_mismatch"] == 0


def test_origin_on_a_socket_that_never_got_a_reply_is_not_judged():
    t = Traffic()
    t.request(0.0, HOST, SERVER, 40000)
    t.reply(0.01, SERVER, HOST, 40000)
    t.request(16.0, HOST, SERVER, 40001, org=12345)  # random-port client: new socket, nothing to compare
    f = one(t)
    assert f["org_mismatch"] == 0 and f["org_match"] == 0


def test_kod_received_is_counted_by_code():
    t = Traffic()
    for i, code in enumerate(("RATE", "RATE", "DENY", "RSTR")):
        t.reply(float(i), SERVER, HOST, 123, kod=code)
    t.packet(5.0, SERVER, HOST, 123, 123, mode=4, leap=3, stratum=0, ref_id=0x494E4954)  # INIT, another code
    f = one(t)
    assert (f["kod_rate"], f["kod_deny"], f["kod_rstr"], f["kod_other"]) == (2, 1, 1, 1)


def test_requests_after_a_kod_are_counted_across_intervals():
    t = Traffic()
    t.request(0.0, HOST, SERVER)
    t.reply(0.01, SERVER, HOST, kod="RATE")
    for i in range(1, 6):
        t.request(i * 30.0, HOST, SERVER)
    features = by_host(run(t), HOST)
    assert [f["after_kod"] for f in features] == [1, 2, 2], "each request after the KoD, even next intervals"


def test_requests_after_the_kod_holdoff_are_not_counted():
    t = Traffic()
    t.reply(0.0, SERVER, HOST, kod="DENY")
    t.request(30.0, HOST, SERVER)
    t.request(200.0, HOST, SERVER)
    features = by_host(run(t, agg=settings(kod_holdoff=100)), HOST)
    assert [f["after_kod"] for f in features] == [1, 0]


def test_client_backing_off_after_rate_kod_is_not_ignoring_it():
    t = Traffic()
    t.request(0.0, HOST, SERVER, poll=6)
    t.reply(0.01, SERVER, HOST, kod="RATE")
    for i in range(1, 6):
        t.request(i * 128.0, HOST, SERVER, poll=6)  # doubled its interval
    assert sum(f["after_kod"] for f in by_host(run(t), HOST)) == 0


def test_any_request_after_deny_ignores_it_however_slow():
    t = Traffic()
    t.reply(0.0, SERVER, HOST, kod="DENY")
    t.request(500.0, HOST, SERVER, poll=6)
    assert sum(f["after_kod"] for f in by_host(run(t), HOST)) == 1


def test_nat_clients_each_honouring_their_own_kod_add_nothing():
    t = Traffic()
    for i, port in enumerate(range(40000, 40010)):
        t.request(i * 1.0, HOST, SERVER, port, poll=7)
        t.reply(i * 1.0 + 0.01, SERVER, HOST, port, kod="RATE")
        t.request(i * 1.0 + 300.0, HOST, SERVER, port, poll=7)  # each backs off past 2^7
    assert sum(f["after_kod"] for f in by_host(run(t), HOST)) == 0


def test_kod_to_one_client_behind_a_nat_is_not_held_against_the_others():
    t = Traffic()
    t.reply(0.0, SERVER, HOST, 40000, kod="RATE")  # client on port 40000 told off
    for port in range(40001, 40010):
        t.request(10.0, HOST, SERVER, port)
    f = one(t)
    assert f["after_kod"] == 0


def test_one_client_polling_as_advertised_has_rate_one_across_intervals():
    t = Traffic()
    t.ntpd(HOST, SERVER, 0, 64 * 20, poll=6)
    features = by_host(run(t), HOST)
    measured = [f for f in features if not math.isnan(f["rate_vs_poll"])]
    assert len(measured) >= 10, "gaps span windows through the socket memory"
    assert all(f["rate_vs_poll"] == pytest.approx(1.0) for f in measured)
    assert all(f["interval_min"] == pytest.approx(64.0) for f in measured)
    assert all(f["instances"] == pytest.approx(1.0) for f in features)
    assert all(f["poll"] == 6 for f in features)


def test_requests_advertising_no_poll_are_held_to_64_seconds():
    t = Traffic()
    for i in range(40):  # ntpsec sends poll 0 (data-minimised); here one request every 8 s
        t.request(i * 8.0, HOST, SERVER, poll=0)
    features = by_host(run(t), HOST)
    assert features[-1]["poll"] == 0, "the feature keeps the advertised value"
    assert features[-1]["rate_vs_poll"] == pytest.approx(8.0)


def test_slow_poll_client_with_one_request_per_window_is_not_fast():
    t = Traffic()
    t.ntpd(HOST, SERVER, 0, 1024 * 12, poll=10)
    features = by_host(run(t), HOST)
    assert max(np.nan_to_num(f["rate_vs_poll"]) for f in features) == pytest.approx(1.0)


def test_instances_sharing_port_123_are_estimated_from_timing():
    t = Traffic(seed=7)
    t.runaway(HOST, SERVER, 0, 64 * 20, instances=8)
    features = by_host(run(t), HOST)[2:-2]
    estimate = np.median([f["instances"] for f in features])
    assert 6 <= estimate <= 10, f"8 instances estimated as {estimate}"
    assert all(f["client_ports"] == 1 for f in features)
    assert np.median([f["rate_vs_poll"] for f in features]) >= 6


def test_nat_gateway_clients_each_count_one_instance_polling_normally():
    t = Traffic()
    for i, port in enumerate(range(40000, 40030)):
        t.ntpd(HOST, SERVER, i * 2.0, 64 * 20, poll=6, port=port)
    features = by_host(run(t), HOST)[10:-2]
    assert all(f["client_ports"] >= 25 for f in features)
    assert all(f["rate_vs_poll"] == pytest.approx(1.0) for f in features)
    assert all(abs(f["instances"] - f["client_ports"]) < 1e-9 for f in features)


def test_one_ntpd_polling_four_servers_is_one_instance():
    t = Traffic()
    for i, server in enumerate(("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4")):
        t.ntpd(HOST, server, i * 3.0, 64 * 6, poll=6)
    features = by_host(run(t), HOST)[1:-1]
    assert all(f["instances"] == pytest.approx(1.0) for f in features)
    assert all(f["servers"] == 4 for f in features)


def test_ipv6_temporary_addresses_roll_up_to_their_64():
    t = Traffic()
    t.request(1.0, "2001:db8:1:2::aaaa", "2001:db8:ffff::1")
    t.request(2.0, "2001:db8:1:2:1234:5678:9abc:def0", "2001:db8:ffff::1")
    t.request(3.0, "2001:db8:1:3::1", "2001:db8:ffff::1")
    iv = run(t, camp=campus("2001:db8:1::/48"))[0]
    assert sorted(iv.host.tolist()) == ["2001:db8:1:2::/64", "2001:db8:1:3::/64"]
    assert by_host([iv], "2001:db8:1:2::/64")[0]["requests_out"] == 2


def test_ipv6_prefix_128_keeps_every_address():
    from netmon.config import Campus

    t = Traffic()
    t.request(1.0, "2001:db8:1:2::aaaa", "2001:db8:ffff::1")
    t.request(2.0, "2001:db8:1:2::bbbb", "2001:db8:ffff::1")
    iv = run(t, camp=Campus(internal=["2001:db8:1::/48"], ipv6_prefix=128))[0]
    assert sorted(iv.host.tolist()) == ["2001:db8:1:2::aaaa", "2001:db8:1:2::bbbb"]


def test_hosts_get_the_first_matching_group_else_the_default():
    t = Traffic()
    for host in ("10.1.0.1", "10.1.2.3", "10.9.0.1", "2001:db8:5::1"):
        t.request(1.0, host, SERVER)
    camp = campus("10.0.0.0/8", "2001:db8::/32", labs=["10.1.2.0/24"], servers=["10.1.0.0/16", "2001:db8:5::/48"])
    iv = run(t, camp=camp)[0]
    groups = dict(zip(iv.host.tolist(), iv.group.tolist()))
    assert groups == {"10.1.0.1": "servers", "10.1.2.3": "labs", "10.9.0.1": "clients", "2001:db8:5::/64": "servers"}


def test_outside_to_outside_rows_make_no_host():
    t = Traffic()
    t.request(1.0, "192.0.2.9", SERVER)
    assert run(t) == []


def test_host_answering_requests_is_a_server_and_clients_are_counted():
    t = Traffic()
    for i, client in enumerate(("198.51.100.1", "198.51.100.2", "198.51.100.3")):
        t.request(float(i), client, HOST, 40000 + i)
        t.reply(i + 0.01, HOST, client, 40000 + i)
    f = one(t)
    assert f["role"] == "server"
    assert (f["requests_in"], f["replies_out"], f["clients"], f["requests_out"]) == (3, 3, 3, 0)


def test_server_that_also_polls_upstream_is_both():
    t = Traffic()
    t.request(0.0, "198.51.100.1", HOST, 40000)
    t.reply(0.01, HOST, "198.51.100.1", 40000)
    t.request(1.0, HOST, SERVER)
    assert one(t)["role"] == "both"


def test_mode_and_version_counts():
    t = Traffic()
    t.request(0.0, HOST, SERVER)
    t.packet(1.0, HOST, SERVER, 123, 123, mode=3, version=3)
    t.reply(2.0, SERVER, HOST)
    f = one(t)
    assert (f["mode3_out"], f["mode4_in"], f["mode4_out"]) == (2, 1, 0)
    assert (f["version4_out"], f["version3_out"]) == (1, 1)


def test_monlist_responses_and_amplification_of_a_reflector():
    t = Traffic()
    victim = "203.0.113.7"
    for i in range(10):
        t.packet(float(i), victim, HOST, 50000, 123, mode=7, ctl_code=42, bytes=36, poll=0)
        for j in range(5):
            t.packet(i + 0.01 * j, HOST, victim, 123, 50000, mode=7, ctl_code=42, ctl_response=1, bytes=468, poll=0)
    f = one(t)
    assert f["monlist_out"] == 50 and f["ctl_out"] == 50 and f["ctl_in"] == 10
    assert f["ctl_bytes_out"] == 50 * 468 and f["ctl_bytes_in"] == 360
    assert f["amplification"] == pytest.approx(50 * 468 / 360)
    assert f["role"] == "server"


def test_flow_records_give_counts_and_leave_ntp_features_unknown():
    t = Traffic()
    t.flow(1.0, HOST, SERVER, 123, 123, packets=10, size=760)
    t.flow(1.0, SERVER, HOST, 123, 123, packets=9, size=684)
    f = one(t)
    assert (f["requests_out"], f["replies_in"], f["bytes_out"], f["flows"]) == (10, 9, 760, 2)
    assert f["servers"] == 1
    for name in ("org_mismatch", "after_kod", "kod_rate", "poll", "instances", "mode3_out", "monlist_out"):
        assert math.isnan(f[name]), f"{name} should be unknown (NaN) from flow records, got {f[name]}"


def test_counter_rows_without_peer_or_port_add_counts_but_no_server_or_port():
    t = Traffic()
    t.request(1.0, HOST, SERVER, 40000)
    t.flow(2.0, HOST, "::", 0, 123, packets=50, size=3800)
    f = one(t)
    assert f["requests_out"] == 51 and f["bytes_out"] == 76 + 3800
    assert (f["servers"], f["client_ports"]) == (1, 1), "an unknown peer (::) or port 0 is not a distinct server/port"


def test_windows_are_aligned_and_close_when_the_watermark_passes():
    aggregator = Aggregator(campus(), settings(interval=60, lateness=2))
    t = Traffic()
    t.request(10.0, HOST, SERVER)
    assert aggregator.add(t.rows()) == []
    t2 = Traffic()
    t2.request(61.0, HOST, SERVER)
    assert aggregator.add(t2.rows()) == [], "61 - lateness 2 has not passed the window end at 60"
    t3 = Traffic()
    t3.request(62.5, HOST, SERVER)
    (closed,) = aggregator.add(t3.rows())
    assert (closed.start, closed.end) == (0.0, 60.0)
    (closed,) = aggregator.advance(120.0)
    assert closed.start == 60.0 and by_host([closed], HOST)[0]["requests_out"] == 2
    assert aggregator.flush() == []


def test_late_packet_within_lateness_joins_its_window():
    t = Traffic()
    t.request(61.0, HOST, SERVER)
    t.request(59.5, HOST, SERVER)  # arrives after the 61 s packet: rows are not sorted
    aggregator = Aggregator(campus(), settings(lateness=2))
    rows = t.rows()[::-1]
    closed = aggregator.add(rows[:1]) + aggregator.add(rows[1:]) + aggregator.flush()
    assert [by_host([c], HOST)[0]["requests_out"] for c in closed] == [1, 1]
    assert health.snapshot().get("aggregate.late", 0) == 0


def test_packet_for_a_closed_window_is_counted_late_and_dropped():
    aggregator = Aggregator(campus(), settings(lateness=2))
    t = Traffic()
    t.request(70.0, HOST, SERVER)
    aggregator.add(t.rows())
    t2 = Traffic()
    t2.request(30.0, HOST, SERVER)
    assert aggregator.add(t2.rows()) == []
    assert health.snapshot()["aggregate.late"] == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, 2.0**62, -(2.0**62)])
def test_rows_with_no_valid_time_are_counted_and_skipped(bad):
    """No time, or one no date can show (a pcapng tsoffset of 2^62 s): an interval that far
    out has no length in float64 seconds."""
    t = Traffic()
    t.request(1.0, HOST, SERVER)
    t.request(2.0, HOST, SERVER)
    rows = t.rows()
    rows["time"][1] = bad
    aggregator = Aggregator(campus(), settings())
    closed = aggregator.add(rows) + aggregator.flush()
    assert by_host(closed, HOST)[0]["requests_out"] == 1
    assert health.snapshot()["aggregate.skip.bad_time"] == 1, f"a row dated {bad} was not counted as a bad time"


def test_a_first_batch_with_no_valid_time_closes_nothing_and_raises_nothing():
    t = Traffic()
    t.request(1.0, HOST, SERVER)
    rows = t.rows()
    rows["time"] = np.nan
    aggregator = Aggregator(campus(), settings())
    assert aggregator.add(rows) == [] and aggregator.flush() == []
    assert health.snapshot()["aggregate.skip.bad_time"] == 1


def test_batches_split_anywhere_give_the_same_features():
    t = Traffic(seed=3)
    t.runaway(HOST, SERVER, 0, 600, instances=5, kod_from=300)
    t.ntpd("10.0.0.6", SERVER2, 0, 600, port=40000, origin="zero")
    whole = run(t)
    split = run(t, batches=17)
    assert [iv.start for iv in whole] == [iv.start for iv in split]
    for a, b in zip(whole, split):
        for name in FEATURES:
            np.testing.assert_array_equal(a.features[name], b.features[name], err_msg=name)


def test_socket_memory_forgets_silent_sockets():
    t = Traffic()
    for port in range(40000, 40100):
        t.request(1.0, HOST, SERVER, port)
    t.request(SOCKET_TTL + 200.0, HOST, SERVER, 123)
    aggregator = Aggregator(campus(), settings())
    aggregator.add(t.rows())
    aggregator.flush()
    assert len(aggregator.sockets) == 1


def test_random_port_flood_counts_schedules_from_rate_not_ports():
    t = Traffic(seed=9)
    for i in range(50 * 60):  # 50 requests/s advertising poll 1 (2 s), a new port each time
        t.request(i / 50.0, HOST, SERVER, int(t.rng.integers(32768, 61000)), poll=1)
    f = one(t)
    assert f["client_ports"] > 2500
    assert 80 <= f["instances"] <= 120, f"~100 schedules polling every 2 s, got {f['instances']}"


def test_random_port_client_polling_slowly_is_one_instance():
    t = Traffic()
    t.request(5.0, HOST, SERVER, 40123, poll=10)
    assert one(t)["instances"] == 1


def test_nat_of_random_port_clients_counts_about_one_instance_each():
    t = Traffic(seed=8)
    for client in range(30):
        time = float(t.rng.uniform(0, 64))
        while time < 640:
            t.request(time, HOST, SERVER, int(t.rng.integers(32768, 61000)), poll=6)
            time += 64.0
    features = by_host(run(t), HOST)[2:-2]
    assert all(20 <= f["instances"] <= 40 for f in features), [f["instances"] for f in features]


def test_a_client_starting_with_iburst_does_not_count_as_fast():
    t = Traffic()
    end = t.iburst(HOST, SERVER, 100.0, port=40000)
    t.ntpd(HOST, SERVER, end + 64, 1200, port=40000)
    features = by_host(run(t), HOST)
    assert max(np.nan_to_num(f["rate_vs_poll"]) for f in features) < 1.5
    assert min(f["interval_min"] for f in features) == pytest.approx(2.0), "the burst's gaps still show"


def test_instances_sharing_a_socket_are_counted_after_the_start_burst():
    t = Traffic(seed=4)
    t.runaway(HOST, SERVER, 0, 600, instances=6)
    features = by_host(run(t), HOST)
    assert all(math.isnan(f["rate_vs_poll"]) for f in features[:1])
    assert np.median([f["rate_vs_poll"] for f in features[2:]]) >= 4


def test_a_client_restarting_on_the_socket_after_a_kod_is_a_new_association():
    t = Traffic()
    t.request(0.0, HOST, SERVER, 40000, poll=10)
    t.reply(0.01, SERVER, HOST, 40000, kod="RATE")
    for i in range(8):  # 20 minutes later another client (reused NAT port) boots: iburst, unsynchronised
        t.packet(1200.0 + 2 * i, HOST, SERVER, 40000, 123, mode=3, poll=6, leap=3 if i == 0 else 0, org_ts=0)
    assert sum(f["after_kod"] for f in by_host(run(t), HOST)) == 0


def test_origins_of_sampled_rows_are_not_judged():
    t = Traffic()
    t.reply(0.0, SERVER, HOST)
    t.request(30.0, HOST, SERVER, org=42)
    for item in t.items:
        item["packets"] = 1000.0  # sFlow at 1 in 1000
    f = one(t)
    assert f["org_mismatch"] == 0 and f["org_match"] == 0 and f["requests_out"] == 1000


def test_one_corrupt_far_future_timestamp_does_not_close_every_window():
    t = Traffic()
    for i in range(10):
        t.request(i * 10.0, HOST, SERVER)
    t.request(4e9, HOST, SERVER)  # year 2096
    for i in range(10, 20):
        t.request(i * 10.0, HOST, SERVER)
    rows = t.rows()
    aggregator = Aggregator(campus(), settings())
    closed = []
    for part in np.array_split(rows, 2):
        closed += aggregator.add(part)
    closed += aggregator.flush()
    assert sum(f["requests_out"] for f in by_host(closed, HOST)) == 20
    assert health.snapshot()["aggregate.skip.time_outlier"] == 1
    assert health.snapshot().get("aggregate.late", 0) == 0


def test_a_capture_days_later_in_the_same_replay_is_kept():
    t = Traffic()
    t.request(10.0, HOST, SERVER)
    t.request(10 * 86400.0, HOST, SERVER)
    t.request(10 * 86400.0 + 5, HOST, SERVER)
    aggregator = Aggregator(campus(), settings())
    rows = t.rows()
    closed = aggregator.add(rows[:1]) + aggregator.add(rows[1:]) + aggregator.flush()
    assert [c.start for c in closed] == [0.0, 10 * 86400.0]


def test_a_host_that_only_receives_scanner_requests_is_not_a_server():
    t = Traffic()
    t.request(1.0, "198.51.100.66", HOST, 40000)
    t.request(2.0, HOST, SERVER)
    f = one(t)
    assert f["role"] == "client" and f["requests_in"] == 1


def test_monlist_answered_to_a_campus_admin_is_not_reflection():
    t = Traffic()
    admin = "10.0.9.9"
    t.packet(1.0, admin, HOST, 50000, 123, mode=7, ctl_code=42, bytes=36, poll=0)
    t.packet(1.01, HOST, admin, 123, 50000, mode=7, ctl_code=42, ctl_response=1, bytes=468, poll=0)
    f = one(t)
    assert f["ctl_out"] == 1 and f["monlist_out"] == 0 and math.isnan(f["amplification"])


def test_a_pile_of_random_port_chronyd_counts_its_daemons_as_concurrent_clients_of_one_server():
    t = Traffic(seed=3)
    for i in range(30):
        t.chrony(HOST, SERVER, float(t.rng.uniform(0, 600)) - 600, 1800, iburst=False)
    features = by_host(run(t), HOST)[12:-2]
    estimate = np.median([f["server_clients"] for f in features])
    assert 25 <= estimate <= 35, f"30 chronyd on random ports estimated as {estimate} clients"
    own = max(f["server_own_ports"] for f in features)  # a random port reused by chance within the socket memory
    assert own <= 0.1 * estimate, f"random ports taken for {own:.1f} clients on ports of their own"
    assert np.median([f["instances"] for f in features]) >= 25


def test_the_effective_request_count_is_the_request_count_for_equal_polls_and_one_for_a_lone_heavy_request():
    t = Traffic(seed=7)
    for i in range(30):
        t.chrony(HOST, SERVER, float(t.rng.uniform(0, 600)) - 600, 1800, iburst=False)
    equal = by_host(run(t), HOST)[12:-2]
    assert all(abs(f["server_requests_eff"] - f["server_requests"]) < 1e-6 for f in equal), \
        [(f["server_requests_eff"], f["server_requests"]) for f in equal[:3]]
    t = Traffic(seed=8)
    t.request(10.0, HOST, SERVER, port=123, poll=15)  # w32time: one request advertising 2^15 s
    t.request(40.0, HOST, SERVER, port=40000, poll=6)
    heavy = by_host(run(t), HOST)[0]
    assert heavy["server_clients"] > 500, f"one 2^15 s request in 60 s weighs {heavy['server_clients']:.0f} clients"
    assert 0.9 <= heavy["server_requests_eff"] < 1.01, f"effective requests {heavy['server_requests_eff']}"


def test_a_start_burst_is_set_aside_so_one_rebooting_client_counts_about_one():
    t = Traffic(seed=4)
    t.iburst(HOST, SERVER, 10.0, port=40001, count=4)  # boot-time one-shot sync
    t.chrony(HOST, SERVER, 20.0, 600)  # then chronyd with iburst
    first = by_host(run(t), HOST)[0]
    assert first["server_requests"] >= 8
    assert first["server_clients"] <= 2.5, f"a boot's bursts counted as {first['server_clients']:.1f} clients"


def test_kod_from_the_busiest_server_is_counted_across_sockets():
    t = Traffic(seed=5)
    for i in range(10):
        t.chrony(HOST, SERVER, float(i), 600, kod_after=100)
    t.ntpd(HOST, SERVER2, 0, 600, poll=10)
    features = by_host(run(t), HOST)
    assert sum(f["server_kod"] for f in features) >= 10
    assert all(f["server_kod"] <= f["kod_rate"] for f in features)


def test_nat_clients_on_ports_of_their_own_are_recognised_after_their_first_poll():
    t = Traffic(seed=6)
    for port in range(40000, 40020):
        t.ntpd(HOST, SERVER, float(t.rng.uniform(0, 64)), 64 * 20, poll=6, port=port)
    features = by_host(run(t), HOST)[3:-2]
    assert all(15 <= f["server_clients"] <= 25 for f in features), [f["server_clients"] for f in features]
    assert all(f["server_own_ports"] >= 0.9 * f["server_clients"] for f in features)
