"""The learned detectors on synthetic fleets: what each must flag, and what it must not."""

from __future__ import annotations

import numpy as np
from river.anomaly import HalfSpaceTrees

from netmon.detect import baseline, drift, population, scaling
from tests.detect.fleet import Fleet, run

HOUR = 3600.0
ODD = "10.9.9.9"


def _first(findings: list, host: str, detector: str) -> float | None:
    times = [f.start for f in findings if f.host == host and f.detector == detector]
    return min(times) if times else None


def _others(findings: list, host: str) -> list:
    return [f for f in findings if f.host != host]


def _incident(fleet: Fleet, ramp: float, stale: bool = False) -> int:
    """One ntpd at poll 10, then one more ntpd at poll 6 every hour from ``ramp``, all on one socket."""
    host = fleet.add_host(ODD)
    fleet.add(host, 1024.0, 5.0, socket=999)
    for k in range(8):
        fleet.add(host, 64.0, 7.0 * k + 3.0, start=ramp + k * HOUR, socket=999, stale=stale)
    return host


def test_population_flags_the_host_unlike_its_group_and_not_the_group():
    fleet = Fleet.clients(300)
    odd = fleet.add_host(ODD)
    arrives = 3 * HOUR
    fleet.add(odd, 8.0, 1.0, start=arrives)  # hard-wired device: every 8 s from one port
    config = population.Config()
    found = run([population.build(config)], fleet, 0.0, 6.5)
    first = _first(found, ODD, "model.population")
    assert first is not None, "the host polling every 8 s among 64-1024 s pollers was never flagged"
    assert first <= arrives + config.persist + config.window + 1800, f"flagged {(first - arrives) / HOUR:.1f} h after it appeared"
    after = [f for f in found if f.host == ODD]
    assert len(after) >= 0.9 * (6.5 * HOUR - first) / 60, f"flagged in only {len(after)} intervals after the first"
    assert not _others(found, ODD), f"normal group members flagged: {_others(found, ODD)[:3]}"
    text = after[0].explanation
    assert "percentile of group clients" in text and "socket_rate" in text, text
    assert after[0].evidence["socket_rate"]["value"] > 4 * after[0].evidence["socket_rate"]["baseline"], text


def test_population_leaves_a_socket_polling_as_it_advertises_at_the_minimum_poll():
    fleet = Fleet.clients(300)
    fast = fleet.add_host(ODD)
    fleet.add(fast, 16.0, 1.0, start=HOUR)  # minpoll 4: every 16 s, and it says so
    found = run([population.build(population.Config())], fleet, 0.0, 5.5)
    assert not [f for f in found if f.host == ODD], "a client at NTP's 16 s minimum poll was flagged"


def test_population_numpy_walk_equals_river_score_one():
    rng = np.random.default_rng(3)
    hst = HalfSpaceTrees(n_trees=5, height=6, window_size=50, seed=11)
    columns = ["a", "b", "c"]
    for row in rng.random((180, 3)):
        hst.learn_one(dict(zip(columns, row)))
    probe = np.vstack([rng.random((100, 3)), rng.random((20, 3)) * 0.1 + 0.9])
    fast = population.tree_scores(population.flatten(hst, columns), probe, 6, 50)
    slow = np.array([hst.score_one(dict(zip(columns, row))) for row in probe])
    np.testing.assert_allclose(fast, slow, rtol=1e-12, err_msg="numpy tree walk disagrees with river")


def test_baseline_flags_a_sudden_change_of_one_host_only():
    fleet = Fleet.clients(50)
    fleet.flow = True  # volume is the baseline's to judge where flow records are all there is
    fleet.add(7, 1.0, 0.0, start=12 * HOUR)  # host 7 starts sending once a second
    found = run([baseline.build(baseline.Config())], fleet, 0.0, 13.0)
    host = fleet.hosts[7]
    first = _first(found, host, "model.baseline")
    assert first is not None and first <= 12 * HOUR + 120, f"sudden flood flagged at {first}"
    assert not _others(found, host), f"steady hosts flagged: {_others(found, host)[:3]}"
    f = next(f for f in found if f.host == host)
    assert "its own usual level" in f.explanation and "requests_out" in f.evidence, f.explanation
    assert f.evidence["requests_out"]["value"] > 8 * f.evidence["requests_out"]["baseline"], f.evidence


def test_baseline_leaves_request_volume_seen_with_ntp_headers_to_the_host_level_view():
    fleet = Fleet.clients(50)
    fleet.add(7, 8.0, 0.0, start=12 * HOUR)  # a reboot loop's fast polling as it advertises: more requests
    found = run([baseline.build(baseline.Config())], fleet, 0.0, 13.0)
    assert not [f for f in found if "requests_out" in f.evidence or "bytes_out" in f.evidence], found[:1]


def test_drift_flags_hourly_ramp_by_four_daemons_while_fast_model_absorbs_it():
    ramp = 24 * HOUR
    fleet = Fleet.clients(40)
    _incident(fleet, ramp)
    slow = drift.build(drift.Config())
    fast = baseline.build(baseline.Config(memory=1800.0, z_alert=3.0))
    found = run([slow], fleet, 0.0, 29.0)
    first = _first(found, ODD, "model.drift")
    assert first is not None, "the hourly ramp was never flagged by drift"
    assert first < ramp + 3 * HOUR, f"flagged {(first - ramp) / HOUR:.1f} h in: more than 4 daemons by then"
    assert not _others(found, ODD), f"steady hosts flagged: {_others(found, ODD)[:3]}"
    absorbed = run([fast], fleet, 0.0, 29.0, gate=False)
    assert _first(absorbed, ODD, "model.baseline") is None, "fast baseline was expected to absorb the ramp"
    f = next(f for f in found if f.host == ODD)
    assert "slow reference" in f.explanation and "cusum" in f.explanation, f.explanation


def test_drift_is_quiet_for_a_reboot_with_iburst():
    fleet = Fleet.clients(40)
    host = fleet.add_host(ODD)
    boot = 20 * HOUR
    fleet.add(host, 1024.0, 5.0, stop=boot, servers=4.0)
    begin = boot + 60.0
    for count, period in ((8, 2.0), (8, 64.0), (8, 128.0), (6, 256.0), (4, 512.0)):  # ntpd's ramp after boot
        fleet.add(host, period, 0.0, start=begin, stop=begin + count * period, servers=4.0, socket=500)
        begin += count * period
    fleet.add(host, 1024.0, 9.0, start=begin, servers=4.0)
    found = run([drift.build(drift.Config()), baseline.build(baseline.Config())], fleet, 0.0, 26.0)
    assert not found, f"a reboot raised findings: {[f.explanation for f in found[:3]]}"


def test_anomalous_intervals_do_not_teach_a_sustained_anomaly_stays_flagged():
    fleet = Fleet.clients(30)
    fleet.flow = True
    fleet.add(4, 0.5, 0.0, start=12 * HOUR)
    model = baseline.build(baseline.Config())
    found = run([model], fleet, 0.0, 18.0)
    host = fleet.hosts[4]
    late = [f for f in found if f.host == host and f.start >= 17 * HOUR]
    assert len(late) == 60, f"after 5 h of flooding only {len(late)} of 60 intervals still flagged"


def test_cold_start_reports_nan_until_warmup():
    fleet = Fleet.clients(20, periods=(64.0,))
    model = baseline.build(baseline.Config(warmup=2 * HOUR))
    quick = {name: drift.Watch(allowance=w.allowance, floor=w.floor) for name, w in drift.Config().features.items()}
    slow = drift.build(drift.Config(warmup=2 * HOUR, features=quick))
    peers = population.build(population.Config(persist=HOUR))
    run([model, slow, peers], fleet, 0.0, 1.0)
    early = fleet.interval(1.0 * HOUR)
    assert np.isnan(model.score(early).scores["baseline"]).all(), "baseline scored before its warm-up"
    assert np.isnan(slow.score(early).scores["drift"]).all(), "drift scored before its reference was captured"
    assert np.isnan(peers.score(early).scores["population"]).all(), "population scored before it learned enough"
    run([model, slow, peers], fleet, 1.0 * HOUR, 2.0)
    later = fleet.interval(3.0 * HOUR)
    assert np.isfinite(model.score(later).scores["baseline"]).all(), "baseline still cold after warm-up"
    assert np.isfinite(slow.score(later).scores["drift"]).all(), "drift still cold after warm-up"
    assert np.isfinite(peers.score(later).scores["population"]).all(), "population still cold"


def test_flow_rows_with_nan_ntp_features_are_scored_on_what_is_known():
    fleet = Fleet.clients(200)
    fleet.flow = True
    fleet.add(9, 1.0, 0.0, start=13 * HOUR)
    detectors = [population.build(population.Config()), baseline.build(baseline.Config()), drift.build(drift.Config())]
    found = run(detectors, fleet, 0.0, 13.5)
    batch = fleet.interval(13.5 * HOUR)
    for d in detectors:
        scores = next(iter(d.score(batch).scores.values()))
        assert np.isfinite(scores).mean() > 0.9, f"{d.name}: NaN features left most hosts unscored"
    assert _first(found, fleet.hosts[9], "model.baseline") is not None, "flow-only flood not flagged"
    assert all(not np.isnan(v["value"]) for f in found for v in f.evidence.values()), "a finding cites an unknown value"


def test_population_tree_walk_scores_exactly_as_river_whether_rows_stop_early_or_reach_the_leaves():
    rng = np.random.default_rng(8)
    columns = ["a", "b", "c", "d"]
    for height, window in ((3, 20), (8, 250), (10, 40)):
        hst = HalfSpaceTrees(n_trees=7, height=height, window_size=window, seed=height)
        for row in rng.random((3 * window, 4)) ** 3:  # crowded near 0: heavy nodes there, light ones elsewhere
            hst.learn_one(dict(zip(columns, row)))
        probe = np.vstack([rng.random((200, 4)) ** 3, rng.random((200, 4)), np.eye(4), np.zeros((1, 4))])
        fast = population.tree_scores(population.flatten(hst, columns), probe, height, window)
        slow = np.array([hst.score_one(dict(zip(columns, row))) for row in probe])
        np.testing.assert_array_equal(fast, slow, err_msg=f"tree walk differs from river at height {height}")


def test_population_scores_follow_river_across_window_pivots_and_a_restored_state():
    """The flattened forest (and the path masses read from it) is cached per model until river
    pivots to a new window: a stale copy would score with the previous window's masses."""
    cfg = population.Config(window_size=10, sample=7, min_learned=10, persist=0.0)
    fleet = Fleet.clients(60, seed=4)
    model = population.Population(cfg)
    compared = 0
    for k in range(24):
        batch = fleet.interval(k * 60.0)
        if k == 12:  # what a restart does: the state goes out as arrays and comes back
            restored = population.Population(cfg)
            restored.load_state(model.state())
            model = restored
        scores = model.score(batch).scores["population"]
        seen = model._observe(batch, None)
        for key, members in seen.by_key.items():
            forest = model.models.get(key)
            if forest is None or np.isnan(scores[members]).all():
                continue
            columns = forest.columns
            cols = [model.names.index(c) for c in columns]
            want = [forest.hst.score_one(dict(zip(columns, row))) for row in seen.scaled[np.ix_(members, cols)].tolist()]
            np.testing.assert_array_equal(scores[members], want, err_msg=f"interval {k}, model {key}: scores off river's")
            compared += 1
        model.learn(batch, np.ones(len(batch), dtype=bool))
    assert compared >= 15, f"only {compared} model-intervals were scored: the forests never passed their first window"


def test_baseline_and_drift_cite_each_flagged_hosts_own_values_when_several_rise_at_once():
    """Several hosts and features past the bar in one interval: each finding's evidence is that
    host's own windowed value and usual level for that feature, not another cell's."""
    fleet = Fleet.clients(50, seed=5)
    fleet.flow = True
    for host, period in ((7, 1.0), (11, 3.0), (30, 0.5)):
        fleet.add(host, period, 0.0, start=13 * HOUR)
    detectors = [baseline.build(baseline.Config()), drift.build(drift.Config())]
    usual_of = {"model.baseline": "mean", "model.drift": "ref"}
    checked: dict[str, set[str]] = {"model.baseline": set(), "model.drift": set()}
    for k in range(int(14.5 * HOUR / 60)):
        batch = fleet.interval(k * 60.0)
        for d in detectors:
            out = d.score(batch)
            seen = d._observe(batch, None)
            for f in out.findings:
                i = batch.host.tolist().index(f.host)
                for name, cited in f.evidence.items():
                    j = d.names.index(name)
                    want = (float(scaling.unlevel(seen.level[i, j])), float(scaling.unlevel(getattr(seen, usual_of[f.detector])[i, j])))
                    assert (cited["value"], cited["baseline"]) == want, f"{f.detector} cites {cited} for {f.host} {name}, its own are {want}"
                checked[f.detector].add(f.host)
            d.learn(batch, np.ones(len(batch), dtype=bool))
    for kind, hosts in checked.items():
        assert len(hosts) >= 2, f"{kind} flagged {sorted(hosts)}: too few hosts at once to check the citing"
