"""The v2 write API (influxdb-client) against victoria-metrics: read back point by point."""

from __future__ import annotations

import math

from netmon import health
from netmon.sinks import influx
from tests.influx.data import make_run, recent_start
from tests.influx.expected import expected_points, numeric_series
from tests.influx.servers import Victoria
from tests.influx.writing import drain_on_start, quick_config, write_all, write_then_sigkill, write_through_outage


def v2_config(url: str, spool, **extra) -> influx.Config:
    values = dict(api="v2", org="campus", bucket="netmon", token="not-checked", batch_size=300)
    return quick_config(url, spool, **(values | extra))


def same_samples(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    """Same timestamps, values equal to 12 significant digits (what victoria-metrics stores)."""
    return [t for t, _ in got] == [t for t, _ in want] and all(
        math.isclose(g, w, rel_tol=1e-11, abs_tol=1e-300) for (_, g), (_, w) in zip(got, want))


def assert_same_series(victoria, run) -> None:
    points = expected_points(run)
    want = numeric_series(points)
    # victoria-metrics keeps string fields (role, explanation...) as value-less series; only numbers compare
    strings = {f"{m}_{name}" for (m, _tags, _ms), fields in points.items() for name, v in fields.items()
               if isinstance(v, str)}
    got = {k: v for k, v in victoria.export().items() if not k[0].startswith("netmon_health") and k[0] not in strings}
    assert set(got) == set(want), (f"series missing {sorted(set(want) - set(got))[:3]}, "
                                   f"extra {sorted(set(got) - set(want))[:3]}")
    wrong = [(k, got[k][:3], want[k][:3]) for k in want if not same_samples(got[k], want[k])][:2]
    assert not wrong, f"samples differ (got, want): {wrong}"


def test_v2_points_read_back_identical(victoria, tmp_path):
    run = make_run(recent_start(), 15)
    write_all(influx.build(v2_config(victoria.url, tmp_path / "spool")), run)
    assert_same_series(victoria, run)
    assert health.snapshot()["influx.write.points"] >= len(expected_points(run))


def test_v2_health_counters_arrive_as_series(victoria, tmp_path):
    health.count("decode.skip.bad_udp_length", 7)
    sink = influx.build(v2_config(victoria.url, tmp_path / "spool"))
    sink.write(make_run(recent_start(), 1)[0])
    sink.close()
    series = victoria.export('{__name__="netmon_health_decode_skip", reason="bad_udp_length"}')
    assert series, "the health counter did not arrive"
    assert list(series.values())[0][-1][1] == 7


def test_v2_database_stopped_mid_stream_every_point_arrives_once(victoria, tmp_path):
    run = make_run(recent_start(), 24)
    write_through_outage(influx.build(v2_config(victoria.url, tmp_path / "spool")), victoria, run)
    assert_same_series(victoria, run)


def test_v2_writer_killed_with_full_spool_sends_it_on_restart(tmp_path):
    root = tmp_path / "vm"
    root.mkdir()
    server = Victoria.create(root)  # not started yet: the database is down while netmon writes
    config = v2_config(server.url, tmp_path / "spool")
    start, intervals = recent_start(), 12
    _, spooled = write_then_sigkill(config.model_dump(mode="json") | {"token": "not-checked"}, start, intervals)
    assert spooled >= len(expected_points(make_run(start, intervals)))
    server.start()
    try:
        drain_on_start(config)
        assert_same_series(server, make_run(start, intervals))
    finally:
        server.stop()


def test_token_never_appears_in_config_repr_or_logs(tmp_path, capsys):
    config = v2_config("http://127.0.0.1:9", tmp_path / "spool", token="s3cret-token", close_timeout=0)
    assert "s3cret-token" not in repr(config) and "s3cret-token" not in str(config.model_dump())
    sink = influx.build(config)
    sink.write(make_run(recent_start(), 1)[0])
    sink.close()
    out = capsys.readouterr()
    assert "s3cret-token" not in out.out + out.err


def test_token_read_from_file_and_environment(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("NETMON_TEST_TOKEN", "from-env")
    assert influx._secret(None, "NETMON_TEST_TOKEN", str(token_file)) == "from-file"
    assert influx._secret(None, "NETMON_TEST_TOKEN", None) == "from-env"
