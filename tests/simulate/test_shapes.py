"""Issue 10's shapes: each is generated with the wire shape of the daemons it imitates, and labelled."""

from __future__ import annotations

import numpy as np
import pytest

from netmon.batch import addr_halves
from netmon.simulate import SHAPES, Scenario, generate
from netmon.simulate.events import Honour, Kind, Reply
from netmon.simulate.packets import NTP_EPOCH, RATE
from netmon.simulate.shapes import NAT_SIZES, PILE, REBOOT_PERIODS

SMALL = Scenario(hosts=40, days=0.8, seed=4, cases=SHAPES)


@pytest.fixture(scope="module")
def sim():
    return generate(SMALL)


@pytest.fixture(scope="module")
def rows(sim):
    return np.concatenate(list(sim.batches()))


def labels_of(sim, case: str) -> list[dict]:
    found = [label for label in sim.labels if label["case"] == case]
    assert found, f"no {case} label"
    return found


def sent(rows: np.ndarray, host: str, server: str | None = None) -> np.ndarray:
    hi, lo = addr_halves(host)
    mine = rows[(rows["src_hi"] == hi) & (rows["src_lo"] == lo) & (rows["mode"] == 3)]
    if server is not None:
        shi, slo = addr_halves(server)
        mine = mine[(mine["dst_hi"] == shi) & (mine["dst_lo"] == slo)]
    return mine


def received(rows: np.ndarray, host: str) -> np.ndarray:
    hi, lo = addr_halves(host)
    return rows[(rows["dst_hi"] == hi) & (rows["dst_lo"] == lo) & (rows["mode"] == 4)]


def fresh_ports(requests: np.ndarray) -> bool:
    """Each request from a port of its own, drawn at random from Linux's ephemeral range
    (so as many distinct ports as random draws give, and never the previous one again)."""
    n, span = len(requests), 61000 - 32768
    expected = span * (1 - (1 - 1 / span) ** n)
    return len(np.unique(requests["sport"])) > 0.95 * expected and (np.diff(requests["sport"].astype(int)) != 0).mean() > 0.99


def clock_of(stamps: np.ndarray) -> np.ndarray:
    """UNIX seconds an NTP timestamp names."""
    return (stamps >> np.uint64(32)).astype(np.int64) - NTP_EPOCH


def test_every_shape_is_a_case_of_its_own_with_what_to_expect(sim):
    assert {label["case"] for label in sim.labels} == set(SHAPES)
    for label in sim.labels:
        expect = label.get("expect", "alert")
        assert expect in ("alert", "quiet"), label
        assert (expect == "quiet") == (label["case"] in ("nat-chrony", "nat-chrony-kod", "reboot-loop", "suspend-resume",
                                                          "minpoll-4", "timesyncd", "campus-server")), label["case"]


@pytest.mark.parametrize("case", ["chrony-runaway-1h", "chrony-runaway-10min", "chrony-runaway-1min", "chrony-runaway-5s"])
def test_a_chronyd_runaway_sends_each_request_from_a_new_port_with_zero_origin_and_a_random_transmit(sim, rows, case):
    (label,) = labels_of(sim, case)
    pile = sent(rows, label["host"], label["detail"]["server"])
    pile = pile[(pile["time"] >= label["start"]) & (pile["time"] < label["end"])]
    assert len(pile) > 20, f"{case}: the pile sent {len(pile)} requests"
    assert fresh_ports(pile), f"{case}: chronyd reuses source ports"
    assert (pile["org_ts"] == 0).all(), f"{case}: chronyd sends a non-zero origin"
    assert np.median(np.abs(clock_of(pile["xmt_ts"]) - pile["time"])) > 86400, f"{case}: transmit looks like a clock"
    assert (pile["poll"] >= 6).all(), f"{case}: chronyd advertises a poll below its minpoll"


@pytest.mark.parametrize("case", ["chrony-runaway-1h", "chrony-runaway-10min", "chrony-runaway-1min", "chrony-runaway-5s"])
def test_a_runaway_label_gives_every_daemon_start_one_pace_apart(sim, case):
    (label,) = labels_of(sim, case)
    starts = label["detail"]["daemon_starts"]
    pace = label["detail"]["pace"]
    assert starts[0] <= label["start"], "the host's own daemon runs before the case"
    extra = np.array(starts[1:])
    assert len(extra) <= PILE and extra[0] >= label["start"]
    assert np.allclose(np.diff(extra), pace, atol=4.0), f"{case}: daemons do not start {pace:g} s apart"


def test_a_runaway_grows_in_steps_while_its_own_daemon_goes_on(sim, rows):
    (label,) = labels_of(sim, "chrony-runaway-1min")
    pile = sent(rows, label["host"], label["detail"]["server"])
    per_10min = np.bincount(((pile["time"] - label["start"]) // 600).astype(int))[:4]
    assert (np.diff(per_10min) > 0).all(), f"requests per 10 min should grow with the pile: {per_10min}"


def test_each_chronyd_instance_honours_kod_on_its_own_four_poll_intervals(sim):
    ev = sim.events
    kod = np.nonzero((ev["reply"] == Reply.KOD_RATE) & (ev["honour"] == Honour.CHRONY))[0]
    assert len(kod) > 10, "no chronyd instance drew a KoD"
    for i in kod[:300]:
        later = ev["time"][(ev["stream"] == ev["stream"][i]) & (ev["time"] > ev["time"][i])]
        if len(later):
            assert later.min() - ev["time"][i] >= 4 * 2.0 ** ev["poll"][i], "chronyd polled again too soon after KoD"


def test_the_ntpsec_server_sends_kod_only_between_1_and_1_5_packets_a_second_and_drops_above(sim, rows):
    (label,) = labels_of(sim, "chrony-runaway-5s")
    ev = sim.events
    to_it = ev["server"] == sim.book.index[label["detail"]["server"]]
    replies = ev["reply"][to_it]
    assert (replies == Reply.KOD_RATE).any(), "the ntpsec server never sent KoD to a pile of hundreds"
    assert (replies == Reply.NONE).sum() > 0.1 * len(replies), "the ntpsec server answered a burst it should drop"
    kod = received(rows, label["host"])
    kod = kod[kod["ref_id"] == RATE]
    assert (kod["stratum"] == 0).all() and (kod["leap"] == 3).all()


@pytest.mark.parametrize("daemons", [20, 200, 4000])
def test_a_cold_start_pile_is_already_running_at_the_first_packet(sim, rows, daemons):
    (label,) = labels_of(sim, f"cold-start-{daemons}")
    assert label["start"] == sim.start
    starts = np.array(label["detail"]["daemon_starts"])
    assert (starts < sim.start).sum() == daemons
    first_hour = sent(rows, label["host"], label["detail"]["server"])
    first_hour = first_hour[first_hour["time"] < sim.start + 3600]
    # every daemon polls at most every 1024 s; KoD (honoured) thins the largest pile
    assert len(first_hour) >= min(daemons, 1000) * 0.5, f"{len(first_hour)} requests in the first hour from {daemons} daemons"
    assert fresh_ports(first_hour)


def test_the_4000_daemon_cold_start_stays_small_in_memory():
    sim = generate(Scenario(hosts=1, days=7, seed=2, cases=("cold-start-4000",)))
    assert sim.rows() < 1_000_000, f"{sim.rows()} rows for a week of the 4,000-daemon cold start"


@pytest.mark.parametrize("case, kod", [("nat-chrony", False), ("nat-chrony-kod", True)])
def test_nat_gateways_of_chrony_clients_with_and_without_kod_from_a_strict_server(sim, rows, case, kod):
    gateways = labels_of(sim, case)
    assert sorted(g["detail"]["clients"] for g in gateways) == sorted(NAT_SIZES)
    assert {g["detail"]["declared"] for g in gateways} == {True, False}
    declared = {g["host"] + "/32" for g in gateways if g["detail"]["declared"]}
    assert declared <= set(sim.meta()["gateways"])
    biggest = max(gateways, key=lambda g: g["detail"]["clients"])
    out = sent(rows, biggest["host"])
    assert (out["org_ts"] == 0).all() and len(np.unique(out["sport"])) > 0.5 * len(out)
    kods = received(rows, biggest["host"])["ref_id"] == RATE
    assert kods.any() == kod, f"{case}: KoD received {int(kods.sum())}"


def test_a_reboot_loop_syncs_at_every_boot_then_starts_its_daemon_with_iburst(sim):
    loops = labels_of(sim, "reboot-loop")
    assert sorted(label["detail"]["period"] for label in loops) == sorted(REBOOT_PERIODS)
    ev = sim.events
    for label in loops:
        period = label["detail"]["period"]
        mine = (ev["client"] == sim.book.index[label["host"]]) & (ev["time"] >= label["start"]) & (ev["time"] < label["end"])
        oneshot = np.sort(ev["time"][mine & (ev["kind"] == Kind.SNTP)])
        assert len(oneshot) >= 4 * (label["detail"]["boots"] - 1), f"period {period}: {len(oneshot)} one-shot requests"
        boots = oneshot[np.concatenate(([True], np.diff(oneshot) > 30))]
        assert 0.75 * period < np.median(np.diff(boots)) < 1.25 * period, f"boots are not {period:g} s apart"
        daemon = np.sort(ev["time"][mine & (ev["kind"] != Kind.SNTP)])
        assert (np.diff(daemon) < 2.5).mean() > 0.3, "the daemon should start with a burst ~2 s apart at every boot"


def test_suspend_resume_laptops_burst_on_every_resume(sim, rows):
    for label in labels_of(sim, "suspend-resume"):
        out = sent(rows, label["host"])
        if label["detail"]["client_kind"] == "chrony" and label["detail"]["resumes"]:
            gaps = np.diff(out["time"])
            assert np.count_nonzero(gaps < 3) >= label["detail"]["resumes"], "no iburst after a resume"


def test_minpoll_4_clients_advertise_and_keep_16_s(sim, rows):
    for label in labels_of(sim, "minpoll-4"):
        out = sent(rows, label["host"])
        assert set(out["poll"].tolist()) == {4}
        first = out[out["dst_lo"] == out["dst_lo"][0]]
        assert 15 < np.median(np.diff(first["time"])) < 17
        if label["detail"]["client_kind"] == "ntpd":
            assert set(out["sport"].tolist()) == {123}


def test_timesyncd_keeps_one_port_per_connection_and_advertises_no_poll(sim, rows):
    for label in labels_of(sim, "timesyncd"):
        out = sent(rows, label["host"])
        assert (out["poll"] == 0).all(), "timesyncd leaves the poll field 0"
        assert (out["org_ts"] == 0).all()
        assert np.abs(clock_of(out["xmt_ts"]) - out["time"]).max() <= 1, "timesyncd sends its real clock"
        assert len(np.unique(out["sport"])) == len(label["detail"]["reboots"]) + 1 or len(out) < 3
        gaps = np.diff(out["time"])
        assert gaps.min() > 25 and gaps.max() < 2200


def test_a_busy_campus_server_answers_hundreds_of_outside_clients(sim, rows):
    (label,) = labels_of(sim, "campus-server")
    hi, lo = addr_halves(label["host"])
    asked = rows[(rows["dst_hi"] == hi) & (rows["dst_lo"] == lo) & (rows["mode"] == 3)]
    assert len(np.unique(asked["src_lo"])) >= 300
    assert label["host"] + "/32" in sim.meta()["groups"]["servers"]


def test_shapes_keep_the_same_output_for_the_same_seed(sim):
    again = generate(SMALL)
    assert again.labels == sim.labels
    assert np.array_equal(again.events["time"], sim.events["time"])
    assert set(np.unique(sim.events["kind"]).tolist()) <= {int(k) for k in Kind}
