"""netmon evaluate: alerts matched to labelled cases, false alerts counted, mismatched labels refused."""

from __future__ import annotations

import json

from click.testing import CliRunner

from netmon.batch import Finding
from netmon.cli import main
from netmon.evaluate import episodes, score
from netmon.simulate.labels import Labels

T0 = 1_000_000.0


def labels() -> Labels:
    meta = {"type": "meta", "version": 1, "start": T0, "end": T0 + 86400, "internal": ["10.20.0.0/16"], "host_count": 10}
    cases = [{"case": "incident", "host": "10.20.0.1", "start": T0 + 3600, "end": T0 + 86400,
              "detail": {"daemons_before": 1, "extra_every": 3600.0}},
             {"case": "flood", "host": "10.20.0.2", "start": T0 + 7200, "end": T0 + 9000, "detail": {}}]
    hosts = {f"10.20.0.{i}": {"kind": "ntpd"} for i in range(1, 10)} | {"2001:db8:20:5::1": {"kind": "chrony"}}
    return Labels(meta=meta, cases=cases, hosts=hosts)


def finding(host: str, start: float, detector: str = "rule.kod_ignored", severity: str = "warning") -> Finding:
    return Finding(host, "clients", start, start + 60, detector, severity, 1.0, "because")


def test_alerts_inside_a_case_are_true_and_time_to_detect_counts_from_its_start():
    found = [finding("10.20.0.1", T0 + 3600 + 2 * 3600 + 60 * k) for k in range(5)]
    report = score(labels(), found)
    incident = report["cases"]["incident"]
    assert incident["recall"] == 1.0 and incident["precision"] == 1.0
    assert incident["time_to_detect_s"]["min"] == 2 * 3600 + 60
    assert incident["daemons_at_detection"] == [4] and incident["flagged_by_4_daemons"]
    assert report["cases"]["flood"]["recall"] == 0.0
    assert report["false_alerts"]["count"] == 0


def test_alerts_on_unlabelled_hosts_and_info_findings_count_as_false_or_nothing():
    found = [finding("10.20.0.5", T0 + 100), finding("10.20.0.5", T0 + 400),  # one episode
             finding("10.20.0.6", T0 + 100, severity="info"),  # not an alert
             finding("2001:db8:20:5::/64", T0 + 500, detector="model.population")]
    report = score(labels(), found)
    false = report["false_alerts"]
    assert false["count"] == 2
    assert false["by_kind"] == {"ntpd": 1, "chrony": 1}
    assert abs(false["per_1000_host_days"] - 200.0) < 1e-9  # 2 alerts over 10 host-days
    assert len(episodes(found, 3600)) == 2


def test_an_alert_before_the_case_on_its_host_is_false(tmp_path):
    report = score(labels(), [finding("10.20.0.2", T0 + 60), finding("10.20.0.2", T0 + 7300)])
    flood = report["cases"]["flood"]
    assert flood["detected"] == 1 and flood["alerts"] == 2 and flood["precision"] == 0.5


def test_evaluate_refuses_labels_of_another_capture(tmp_path):
    runner = CliRunner()
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, 1), (b, 2)):
        result = runner.invoke(main, ["simulate", "--hosts", "12", "--days", "0.05", "--seed", str(seed), "--cases", "incident", "--out", str(out)])
        assert result.exit_code == 0, result.output
    good = runner.invoke(main, ["evaluate", "--labels", str(a / "labels.jsonl"), str(a / "campus.pcap"), "--json", str(tmp_path / "r.json")])
    assert good.exit_code == 0, good.output
    assert json.loads((tmp_path / "r.json").read_text())["cases"]["incident"]["labelled"] == 1
    bad = runner.invoke(main, ["evaluate", "--labels", str(b / "labels.jsonl"), str(a / "campus.pcap")])
    assert bad.exit_code != 0
    assert "same netmon simulate run" in bad.output


def test_a_labels_file_that_is_not_one_says_so(tmp_path):
    junk = tmp_path / "labels.jsonl"
    junk.write_text('{"type": "case"}\n')
    result = CliRunner().invoke(main, ["evaluate", "--labels", str(junk), str(junk)])
    assert result.exit_code != 0 and "meta record" in result.output


def test_a_capture_from_another_time_is_refused_before_it_is_read(tmp_path):
    runner = CliRunner()
    args = ["simulate", "--hosts", "10", "--days", "0.02", "--cases", "incident", "--out", str(tmp_path)]
    assert runner.invoke(main, args).exit_code == 0
    meta, *rest = (tmp_path / "labels.jsonl").read_text().splitlines()
    moved_meta = json.loads(meta)
    moved_meta["start"] += 86400
    moved_meta["end"] += 86400
    moved = tmp_path / "moved.jsonl"
    moved.write_text("\n".join([json.dumps(moved_meta), *rest]) + "\n")
    result = runner.invoke(main, ["evaluate", "--labels", str(moved), str(tmp_path / "campus.pcap")])
    assert result.exit_code != 0 and "spans" in result.output


def shape_labels() -> Labels:
    meta = {"type": "meta", "version": 1, "start": T0, "end": T0 + 2 * 86400, "internal": ["10.20.0.0/16"], "host_count": 10}
    cases = [{"case": "chrony-runaway-5s", "host": "10.20.0.1", "start": T0 + 3600, "end": T0 + 7200, "expect": "alert",
              "detail": {"daemon_starts": [T0] + [T0 + 3600 + 5 * k for k in range(300)]}},
             {"case": "cold-start-20", "host": "10.20.0.2", "start": T0, "end": T0 + 86400, "expect": "alert",
              "detail": {"daemon_starts": [T0 - 3600 * k for k in range(1, 21)]}},
             {"case": "reboot-loop", "host": "10.20.0.3", "start": T0 + 600, "end": T0 + 86400, "expect": "quiet", "detail": {}},
             {"case": "reboot-loop", "host": "10.20.0.4", "start": T0 + 600, "end": T0 + 86400, "expect": "quiet", "detail": {}}]
    return Labels(meta=meta, cases=cases, hosts={f"10.20.0.{i}": {"kind": "chrony"} for i in range(1, 11)})


def test_each_shape_reports_daemons_at_detection_and_its_own_false_alerts():
    found = [finding("10.20.0.1", T0 + 3600 + 40),  # ends at +100 s: 21 pile daemons started (0, 5 ... 100 s) + its own
             finding("10.20.0.1", T0 + 20 * 3600),  # after the case: a false alert on a runaway's host
             finding("10.20.0.2", T0 + 60),
             finding("10.20.0.3", T0 + 5000), finding("10.20.0.3", T0 + 50000)]
    report = score(shape_labels(), found, interval=60.0)
    fast = report["cases"]["chrony-runaway-5s"]
    assert fast["daemons_at_detection"] == [22] and fast["bar"]["met"] is False
    assert (fast["bar"]["by"], fast["bar"]["limit"]) == ("daemons", 10), "the bar's measure is a value, not text"
    assert fast["false_alerts"] == 1 and fast["false_per_1000_host_days"] == 500.0  # 1 over 1 host x 2 days
    cold = report["cases"]["cold-start-20"]
    assert cold["daemons_at_detection"] == [20] and cold["time_to_detect_s"]["max"] == 120 and cold["bar"]["met"]
    assert (cold["bar"]["by"], cold["bar"]["limit"]) == ("intervals", 2)
    loop = report["cases"]["reboot-loop"]
    assert loop["expect"] == "quiet" and loop["recall"] is None and loop["flagged_hosts"] == 1
    assert loop["false_alerts"] == 2 and loop["false_per_1000_host_days"] == 500.0  # 2 over 2 hosts x 2 days
    assert loop["false_by_detector"] == {"rule.kod_ignored": 2}
    assert report["false_alerts"]["count"] == 3, "quiet shapes' and stray alerts count as false over the whole run too"


def test_evaluate_reports_every_shape_of_a_small_simulated_world_as_table_and_json(tmp_path):
    from netmon.simulate import SHAPES

    out = tmp_path / "shapes.json"
    result = CliRunner().invoke(main, ["evaluate", "--simulate", "--cases", "shapes", "--hosts", "30", "--days", "0.3",
                                       "--seed", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report["cases"]) == list(SHAPES), "every shape should be reported on its own"
    for name, case in report["cases"].items():
        assert name in result.output, f"{name} missing from the table"
        assert case["false_per_1000_host_days"] is not None and case["host_days"] > 0
        if case["expect"] == "quiet":
            assert case["recall"] is None and "flagged_hosts" in case
        else:
            assert 0.0 <= case["recall"] <= 1.0 and "daemons_at_detection" in case
    assert all(d == 4000 for d in report["cases"]["cold-start-4000"]["daemons_at_detection"])
