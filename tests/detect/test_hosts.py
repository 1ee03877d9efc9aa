"""The host-level view (``hosts`` detector) on crafted real-daemon shapes: each shape
pinned by what it must (or must not) raise, and by what its explanation says."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from netmon import health
from netmon.aggregate import Aggregator
from netmon.batch import Finding
from netmon.config import Detect
from netmon.detect import checkpoint, hosts
from netmon.detect.engine import Engine
from tests.aggregate.craft import Traffic, campus, settings

HOST, SERVER = "10.0.0.5", "192.0.2.1"
HOUR = 3600.0


def peers(t: Traffic, end: float, n: int = 30) -> None:
    """Ordinary hosts the group view judges against: one client each at 64 s."""
    for i in range(n):
        t.ntpd(f"10.1.0.{i + 1}", "192.0.2.9", float(t.rng.uniform(0, 64)), end, poll=6, origin="zero")


def findings(t: Traffic, detect: dict | None = None, groups: dict | None = None) -> list[Finding]:
    aggregator = Aggregator(campus(**(groups or {})), settings())
    engine = Engine(Detect(**{"detectors": ["rules", "hosts"], **(detect or {})}), restore=False)
    out = []
    for intervals in aggregator.add(t.rows()) + aggregator.flush():
        out += engine.process(intervals).findings
    return [f for f in out if f.host == HOST and f.detector.startswith("hosts.")]


def test_twenty_chronyd_already_running_at_the_first_packet_are_flagged_within_two_intervals():
    t = Traffic(seed=1)
    peers(t, 900)
    for _ in range(20):
        t.chrony(HOST, SERVER, float(t.rng.uniform(0, 64)), 900, iburst=False)
    found = findings(t)
    assert found, "a host running 20 chronyd from the first packet raised nothing"
    assert found[0].end <= 120.0, f"first flagged at {found[0].end:.0f} s, not within two 60 s intervals"
    assert found[0].detector == "hosts.level"
    text = found[0].explanation
    assert "concurrent clients to 192.0.2.1" in text and "a client that polls every 64 s" in text and "group view" in text


def test_a_host_of_a_group_too_small_to_compare_with_is_said_to_be_judged_against_the_campus():
    t = Traffic(seed=1)
    peers(t, 900)
    for _ in range(20):
        t.chrony(HOST, SERVER, float(t.rng.uniform(0, 64)), 900, iburst=False)
    found = findings(t, groups={"lab": [f"{HOST}/32"]})
    assert found and found[0].detector == "hosts.level", "20 chronyd in a group of one raised nothing"
    assert "far above the usual host of the campus (group lab has too few hosts)" in found[0].explanation, \
        f"the campus's figures were not named as the campus's: {found[0].explanation}"
    alone = Traffic(seed=1)
    for _ in range(20):
        alone.chrony(HOST, SERVER, float(alone.rng.uniform(0, 64)), 900, iburst=False)
    found = findings(alone)
    assert found and "too many for one machine (too few hosts this interval" in found[0].explanation, \
        [f.explanation for f in found[:1]]


def test_a_crowd_of_daemons_is_extreme_even_in_a_group_whose_spread_is_wide_at_cold_start():
    t = Traffic(seed=14)
    peers(t, 600, n=15)
    for i in range(15):  # hosts of 8 chronyd each beside the ordinary hosts: the group's spread is wide
        for _ in range(8):
            t.chrony(f"10.2.0.{i + 1}", "192.0.2.9", float(t.rng.uniform(0, 64)), 600, iburst=False)
    for _ in range(200):  # steady at poll 10: ~12 requests a minute, so no port could have repeated yet
        t.chrony(HOST, SERVER, float(t.rng.uniform(0, 1024)), 600, poll=10, iburst=False)
    found = findings(t)
    assert found and found[0].end <= 120.0, \
        f"200 chronyd were not flagged within two intervals: {[(f.end, f.explanation) for f in found[:1]]}"


def test_a_lone_request_advertising_a_nine_hour_poll_is_no_crowd_at_cold_start():
    t = Traffic(seed=13)
    peers(t, 900)
    t.ntpd(HOST, SERVER, 5.0, 900, poll=6, port=123)  # one ntpd every 64 s
    for at in (70.0, 130.0):  # and w32time, which advertises 2^15 s: each request weighs 32768 client-seconds
        t.request(at, HOST, SERVER, port=50123, poll=15)
    assert findings(t) == [], "a w32time request beside one ntpd was read as a crowd of clients"


def test_a_chronyd_added_every_hour_is_caught_by_its_fourth_daemon():
    t = Traffic(seed=2)
    peers(t, 5 * HOUR)
    starts = [i * HOUR + float(t.rng.uniform(0, 60)) for i in range(5)]
    for start in starts:
        t.chrony(HOST, SERVER, start, 5 * HOUR)
    found = findings(t)
    assert found, "one chronyd more every hour raised nothing in 5 h"
    running = sum(s <= found[0].end for s in starts)
    assert running <= 4, f"caught only with {running} daemons running"
    assert found[0].detector == "hosts.growth" and "never falling back" in found[0].explanation


def test_a_pile_growing_from_the_first_packet_is_caught_by_growth_before_its_first_window_has_filled():
    # monitoring started with the host's one chronyd; one more every 3 min: the growth view's ratchet starts
    # two intervals and four poll periods after the host's first, not after the whole 30 min window
    t = Traffic(seed=23)
    peers(t, 1800.0)
    starts = [180.0 * i for i in range(10)]
    for start in starts:
        t.chrony(HOST, SERVER, start, 1800.0)
    found = findings(t)
    assert found and found[0].detector == "hosts.growth", [(f.end, f.explanation) for f in found[:1]]
    running = sum(s <= found[0].end for s in starts)
    assert running <= 4, f"caught only with {running} daemons running, {found[0].end:.0f} s in"


def test_a_crash_loop_adding_a_daemon_every_five_seconds_is_caught_in_its_first_interval():
    t = Traffic(seed=3)
    peers(t, 3.5 * HOUR)
    t.chrony(HOST, SERVER, 0.0, 3.5 * HOUR)
    loop = 3 * HOUR + 5.0
    for i in range(100):
        t.chrony(HOST, SERVER, loop + 5.0 * i, 3.5 * HOUR)
    found = findings(t)
    assert found and found[0].end <= loop + 60.0, "the crash loop was not caught in its first interval"
    assert "jump past its own highest level" in found[0].explanation


def test_a_reboot_loop_with_boot_sync_and_iburst_stays_quiet():
    t = Traffic(seed=4)
    peers(t, 2 * HOUR)
    for boot in np.arange(0.0, 2 * HOUR, 150.0):
        t.iburst(HOST, SERVER, float(boot), port=int(t.rng.integers(33000, 60000)), count=4)
        t.chrony(HOST, SERVER, float(boot) + 10.0, float(boot) + 140.0)
    assert findings(t) == []


def test_a_nat_gateway_whose_clients_keep_their_ports_is_gateway_like_once_past_its_cold_start():
    t = Traffic(seed=5)
    peers(t, 4 * HOUR)
    for port in range(40000, 40030):
        t.ntpd(HOST, SERVER, float(t.rng.uniform(0, 1024)), 4 * HOUR, poll=10, port=port, origin="zero")
    for i in range(20):  # chrony clients behind it (random ports), laptops arriving through the morning
        t.chrony(HOST, SERVER, float(t.rng.uniform(0, 1024)) + 360.0 * i, 4 * HOUR, poll=10, iburst=False)
    found = findings(t)
    # by count alone an undeclared gateway at the first packet is a pile of daemons: the group view may
    # call it; once its clients have shown ports of their own it is judged as a gateway, and its level
    # and its morning growth raise nothing
    assert all(f.end <= 2400.0 + 60.0 and "group view" in f.explanation for f in found), [
        (f.end, f.explanation) for f in found]


def test_a_declared_gateway_is_not_judged_on_its_level_but_still_on_growth():
    t = Traffic(seed=6)
    peers(t, 3 * HOUR)
    for _ in range(40):
        t.chrony(HOST, SERVER, float(t.rng.uniform(0, 64)), 3 * HOUR, iburst=False)
    groups = {"nat": [f"{HOST}/32"]}
    assert findings(t, {"hosts": {"kinds": {"nat": "gateway"}}}, groups) == []
    undeclared = findings(t, groups=groups)
    assert undeclared and undeclared[0].detector == "hosts.level"


def test_kod_ignored_by_the_host_as_a_whole_while_each_chronyd_honours_its_own():
    t = Traffic(seed=7)
    peers(t, 2 * HOUR)
    for i in range(120):  # a daemon more every 30 s; each backs off on its own KoD
        t.chrony(HOST, SERVER, 30.0 * i, 2 * HOUR, kod_after=600.0)
    found = findings(t)
    kod = [f for f in found if "has not cut its requests to half" in f.explanation]
    assert kod, "the host's rate after KoD was not judged"
    assert "KoD received from it since" in kod[0].explanation
    # the change said outright, not two rates for the reader to divide
    assert "requests/h now, about the" in kod[0].explanation, kod[0].explanation
    assert any("KoD view" in f.explanation and f.severity == "critical" for f in found)


def test_a_rate_against_the_rate_at_the_first_kod_is_said_as_a_ratio():
    # the newcomer read "13096/h now, 2134/h at the first" and missed a sixfold rise
    assert hosts._against(13096.0, 2134.0) == "13,096 requests/h now, 6.1 times the 2,134/h at the first KoD"
    assert hosts._against(600.0, 1200.0) == "600 requests/h now, 50% of the 1,200/h at the first KoD"
    assert hosts._against(50.0, 0.0) == "50 requests/h now"
    assert "nan" not in hosts._against(float("nan"), 1200.0)


def capped(t: Traffic, host: str, end: float, share_at: list[tuple[float, float]], per_poll: int = 8) -> None:
    """A host's requests to SERVER held by the server's rate limit at ``per_poll`` per 64 s whatever the
    clients behind them (chronyd instances back off on their own KoD), each from a new random port; from
    each (time, share) of ``share_at`` on, that share of them is answered with KoD RATE."""
    time = 0.0
    while time < end:
        share = [s for at, s in share_at if at <= time][-1]
        port = int(t.rng.integers(32768, 61000))
        t.request(time, host, SERVER, port, org=0, poll=6)
        t.reply(time + 0.02, SERVER, host, port, kod="RATE" if t.rng.uniform() < share else None)
        time += float(t.rng.exponential(64.0 / per_poll))


def test_a_pile_whose_rate_the_server_caps_is_caught_as_its_kod_share_rises_and_a_gateway_at_a_steady_share_is_not():
    # real chronyd (tests/scenario/recordings): a pile's request rate saturates near the server's limit as
    # each instance backs off on its own KoD, but the share of its answers that are KoD rises with the pile
    # (measured 0 -> 0.76 from 4 to 18 daemons) while a NAT gateway of chrony clients holds near 0.55
    end = 2 * HOUR
    t = Traffic(seed=21)
    peers(t, end)
    capped(t, HOST, end, [(0.0, 0.0), (1200.0, 0.3), (2400.0, 0.55), (3600.0, 0.75)])
    found = findings(t)
    assert found, "a host at a capped rate whose KoD share rose 0 -> 0.3 -> 0.55 -> 0.75 raised nothing"
    assert found[0].detector == "hosts.growth", found[0].explanation
    assert found[0].end > 2400.0, f"flagged at {found[0].end:.0f} s, before its KoD share had risen twice"
    assert "of its answers that were KoD" in found[0].explanation, found[0].explanation
    gateway = Traffic(seed=22)
    peers(gateway, end)
    capped(gateway, HOST, end, [(0.0, 0.55)])
    quiet = findings(gateway)
    assert quiet == [], f"a gateway at a steady KoD share was flagged: {[f.explanation for f in quiet[:1]]}"


def test_timestamps_so_large_that_intervals_would_have_no_length_reach_no_detector():
    # a capture claiming times near 2^62 s (a pcapng if_tsoffset): an interval's end would round to
    # its start (float spacing 1024 s there) and client counts divide by a length of 0
    t = Traffic(seed=24)
    peers(t, 2 * HOUR)
    for start in range(0, 3600, 300):
        t.chrony(HOST, SERVER, float(start), 2 * HOUR)
    rows = t.rows()
    rows["time"] += 2.0 ** 62
    aggregator = Aggregator(campus(), settings())
    engine = Engine(Detect(detectors=["hosts"]), restore=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [engine.process(intervals) for intervals in aggregator.add(rows) + aggregator.flush()]
    assert outputs == [], "rows no date can show made intervals"
    assert health.snapshot()["aggregate.skip.bad_time"] == len(rows), "the far-dated rows were not counted"
    assert [str(w.message) for w in caught] == [], "far-dated rows raised warnings"


def test_an_unadvertised_poll_is_said_so_and_held_to_64_s():
    t = Traffic(seed=8)
    peers(t, 600)
    for _ in range(25):
        t.chrony(HOST, SERVER, float(t.rng.uniform(0, 64)), 600, poll=0, iburst=False)
    found = findings(t)
    assert found and "poll not advertised, 64 s assumed" in found[0].explanation


def test_host_state_survives_a_checkpoint(tmp_path):
    t = Traffic(seed=9)
    peers(t, 600)
    t.chrony(HOST, SERVER, 0.0, 600)
    path = tmp_path / "state.ckpt"
    engine = Engine(Detect(detectors=["hosts"], checkpoint=str(path)), restore=False)
    aggregator = Aggregator(campus(), settings())
    for intervals in aggregator.add(t.rows()) + aggregator.flush():
        engine.process(intervals)
    engine.save()
    again = Engine(Detect(detectors=["hosts"], checkpoint=str(path)), restore=True)
    before, after = engine.detectors["hosts"].table, again.detectors["hosts"].table
    assert after.keys == before.keys
    assert np.array_equal(after["steps"][: len(after)], before["steps"][: len(before)])
    assert checkpoint.load(path)["hosts"]["features"] == ["server_requests"]


@pytest.mark.parametrize("bad", [{"kinds": {"nat": "router"}}, {"z": 0}])
def test_a_wrong_hosts_table_names_the_key(bad):
    from netmon.config import ConfigError, validate

    with pytest.raises(ConfigError, match="detect.hosts"):
        validate({"detect": {"hosts": bad}})


def test_random_ports_repeating_by_chance_do_not_make_a_flood_look_like_a_gateway():
    t = Traffic(seed=10)
    peers(t, 300)
    for k in range(300 * 25):  # 25 requests a second, each from a random port
        t.request(k / 25.0, HOST, SERVER, int(t.rng.integers(32768, 61000)), org=0, poll=6)
    found = findings(t)
    assert found and found[0].end <= 120.0 and "gateway" not in found[0].explanation


def test_a_second_replay_of_the_same_capture_starts_its_hosts_over_without_warnings(tmp_path):
    import warnings

    t = Traffic(seed=11)
    peers(t, 1800)
    t.chrony(HOST, SERVER, 0.0, 1800)
    path = tmp_path / "state.ckpt"
    detect = Detect(detectors=["rules", "hosts", "population", "baseline", "drift"], checkpoint=str(path))
    for restore in (False, True):  # the second replay restores the first one's state, which is from later
        engine = Engine(detect, restore=restore)
        aggregator = Aggregator(campus(), settings())
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            for intervals in aggregator.add(t.rows()) + aggregator.flush():
                engine.process(intervals)
        engine.save()
    drift = engine.detectors["drift"]
    row = drift.table.keys.index(HOST)
    assert drift.table["first"][row] == 60.0, "the host did not start over on the replay of older traffic"


def test_a_vpn_whose_count_fell_by_half_overnight_is_gateway_like_and_its_morning_is_quiet():
    t = Traffic(seed=12)
    peers(t, 8 * HOUR)
    for i in range(16):  # a working day's sessions, then the evening: all but 4 leave
        t.chrony(HOST, SERVER, float(t.rng.uniform(0, 600)), 8 * HOUR if i < 4 else 3 * HOUR, iburst=False)
    for i in range(16):  # the next morning: one session more every 5 minutes
        t.chrony(HOST, SERVER, 5 * HOUR + 300.0 * i, 8 * HOUR)
    morning = [f for f in findings(t) if f.end > 5 * HOUR]
    assert morning == [], [(f.end, f.explanation) for f in morning[:2]]


def test_a_small_nat_whose_count_fell_from_three_to_one_overnight_is_gateway_like_and_its_next_morning_quiet():
    # a NAT of a few chrony clients nobody declared: one desktop always on, two laptops for the working day;
    # random ports each request, so no port of its own ever shows. Its evening fall from 3 to 1 is what a
    # pile of daemons never does (swing), so the next morning's 1 -> 3 is no runaway (it was, at swing 4)
    t = Traffic(seed=31)
    peers(t, 9 * HOUR)
    t.chrony(HOST, SERVER, 0.0, 9 * HOUR, iburst=False)  # the desktop
    for day in (0.0, 5 * HOUR):  # two working days of two laptops, 3 h each; the night between them
        for i in range(2):
            t.chrony(HOST, SERVER, day + 900.0 * (i + 1), day + 3 * HOUR + 600.0 * i)
    morning = [f for f in findings(t) if f.end > 5 * HOUR]
    assert morning == [], [(f.end, f.explanation) for f in morning[:2]]
