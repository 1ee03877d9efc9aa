"""The v1 /write path against a real influxd 1.x: point by point, outages, SIGKILL."""

from __future__ import annotations

from pathlib import Path

import requests

from netmon import health
from netmon.sinks import influx
from tests.influx.data import make_run, recent_start
from tests.influx.expected import expected_points
from tests.influx.readback import influx_points
from tests.influx.servers import Influx1
from tests.influx.writing import drain_on_start, quick_config, write_all, write_then_sigkill, write_through_outage


def sink_config(url: str, spool: Path, **extra) -> influx.Config:
    return quick_config(url, spool, api="v1", **extra)


def assert_same_points(server: Influx1, run) -> None:
    got, want = influx_points(server), expected_points(run)
    missing = sorted(set(want) - set(got))[:3]
    extra = sorted(set(got) - set(want))[:3]
    assert not missing and not extra, f"{len(set(want) - set(got))} points missing e.g. {missing}; extra {extra}"
    wrong = [(k, got[k], want[k]) for k in want if got[k] != want[k]][:2]
    assert not wrong, f"field values differ (got, want): {wrong}"


def test_every_point_written_reads_back_identical(influx1, tmp_path):
    run = make_run(recent_start(), 12)
    write_all(influx.build(sink_config(influx1.url, tmp_path / "spool")), run)
    assert_same_points(influx1, run)
    assert health.snapshot()["influx.spool.points"] == 0


def test_health_point_carries_write_counters(influx1, tmp_path):
    sink = influx.build(sink_config(influx1.url, tmp_path / "spool"))
    health.count("decode.skip.truncated", 3)
    for scored in make_run(recent_start(), 3):
        sink.write(scored)
    sink.close()
    skipped = influx1.series('SELECT last("decode_skip") FROM netmon_health WHERE "reason" = \'truncated\'')
    spooled = influx1.series('SELECT last("influx_spool_points") FROM netmon_health WHERE "sink" = \'influx\'')
    assert skipped and spooled, "no netmon_health point was written"
    assert (skipped[0]["values"][0][1], spooled[0]["values"][0][1]) == (3, 0)


def test_database_stopped_mid_stream_every_point_arrives_once(influx1, tmp_path):
    run = make_run(recent_start(), 30)
    write_through_outage(influx.build(sink_config(influx1.url, tmp_path / "spool")), influx1, run)
    assert_same_points(influx1, run)
    assert health.snapshot()["influx.spool.points"] == 0


def test_writer_killed_with_full_spool_sends_it_on_restart(tmp_path):
    root = tmp_path / "influxd"
    root.mkdir()
    server = Influx1.create(root)  # not started yet: the database is down while netmon writes
    config = sink_config(server.url, tmp_path / "spool")
    start, intervals = recent_start(), 20
    run = make_run(start, intervals)
    _, spooled = write_then_sigkill(config.model_dump(mode="json"), start, intervals)
    assert spooled >= len(expected_points(run)), "the writer did not spool every point"
    server.start()
    try:
        server.create_database("netmon")
        drain_on_start(config)
        assert_same_points(server, run)
    finally:
        server.stop()


def test_full_spool_drops_oldest_and_counts_them(influx1, tmp_path):
    run = make_run(recent_start(), 40)
    influx1.stop()
    sink = influx.build(sink_config(influx1.url, tmp_path / "spool", spool_max_bytes=1 << 16, close_timeout=0,
                                    health_interval=3600))
    for scored in run:
        sink.write(scored)
    sink.close()
    dropped = health.snapshot().get("influx.spool.dropped_points", 0)
    assert dropped > 0, "a 64 KiB spool held 40 intervals: the bound never bit"
    influx1.start()
    sink = influx.build(sink_config(influx1.url, tmp_path / "spool"))
    sink.close()
    got = influx_points(influx1)
    want = expected_points(run)
    health_times = {row[0] for s in influx1.series("SELECT * FROM netmon_health") for row in s["values"]}
    assert len(health_times) == 2, "the health points of both closes must arrive (the first sink's was spooled)"
    assert set(got) <= set(want), "points arrived that were never written"
    assert len(got) + dropped == len(want), "arrived + dropped must account for every point"
    newest = max(want, key=lambda k: k[2])
    oldest = min(want, key=lambda k: k[2])
    assert newest in got and oldest not in got, "the bound must drop the oldest points, keep the newest"


def test_v1_credentials_from_a_file_and_retention_policy(tmp_path, capsys):
    root = tmp_path / "influxd"
    root.mkdir()
    server = Influx1.create(root, auth=True)
    server.start()
    try:
        server.admin("CREATE USER admin WITH PASSWORD 'adm1n-pw' WITH ALL PRIVILEGES")
        server.auth = ("admin", "adm1n-pw")
        server.create_database("netmon")
        server.admin('CREATE RETENTION POLICY "week" ON "netmon" DURATION 7d REPLICATION 1')
        server.admin("CREATE USER writer WITH PASSWORD 'wr1ter-secret'")
        server.admin('GRANT WRITE ON "netmon" TO "writer"')
        password = tmp_path / "password"
        password.write_text("wr1ter-secret\n")
        run = make_run(recent_start(), 3)
        wrong = influx.build(sink_config(server.url, tmp_path / "spool", username="writer", password="nope",
                                         close_timeout=2))
        write_all(wrong, run)
        assert health.snapshot()["influx.write.errors"] > 0, "a refused login must be retried, not dropped"
        assert wrong.spool.pending_points() > 0, "points refused for authentication must stay spooled"
        sink = influx.build(sink_config(server.url, tmp_path / "spool", username="writer",
                                        password_file=str(password), retention_policy="week"))
        write_all(sink, run)
        stored = server.series('SELECT count("requests") FROM "netmon"."week"."ntp_traffic"')
        assert stored[0]["values"][0][1] == 2 * 5 * len(run), "points must land in retention policy week"
        assert not server.series('SELECT count("requests") FROM "netmon"."autogen"."ntp_traffic"')
        out = capsys.readouterr()
        assert "wr1ter-secret" not in out.out + out.err
    finally:
        server.stop()


def test_refused_batch_is_counted_and_does_not_block_later_points(influx1, tmp_path):
    run = make_run(recent_start(), 4)
    first_ns = int(run[0].intervals.start * 1e9)
    # a field type conflict: role written as a number first, so netmon's string role is refused
    requests.post(influx1.url + "/write", params={"db": "netmon"},
                  data=f"ntp_host,host=10.1.0.1,group=lab role=1.0 {first_ns}", timeout=10).raise_for_status()
    sink = influx.build(sink_config(influx1.url, tmp_path / "spool", batch_size=10_000))
    write_all(sink, run)
    assert health.snapshot()["influx.write.rejected_points"] > 0
    assert sink.spool.pending_points() == 0, "a refused batch must leave the spool"
    later = influx1.series(f'SELECT count("requests") FROM "ntp_traffic" WHERE time > {first_ns}')
    assert later and later[0]["values"][0][1] > 0


def test_writer_killed_while_sending_loses_and_duplicates_nothing(influx1, tmp_path):
    config = sink_config(influx1.url, tmp_path / "spool", batch_size=30, flush_interval=0.01)
    start, intervals = recent_start(), 40
    run = make_run(start, intervals)
    last, _ = write_then_sigkill(config.model_dump(mode="json"), start, intervals, kill_after=15, pause=0.02)
    assert last >= 15, "the writer died before it wrote anything"
    drain_on_start(config)
    got = set(influx_points(influx1))
    written, maybe = set(expected_points(run[: last + 1])), set(expected_points(run[: last + 2]))
    assert written <= got, f"{len(written - got)} points written before the SIGKILL never arrived"
    assert got <= maybe, "points arrived that were never written"


def test_password_in_the_url_never_appears_in_a_failed_write_log(tmp_path, capsys):
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):  # a database that answers every request HTTP 500
        def do_GET(self):
            self._fail()

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._fail()

        def _fail(self):
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://writer:pw-s3cret@127.0.0.1:{server.server_address[1]}"
        sink = influx.build(sink_config(url, tmp_path / "spool", close_timeout=1))
        sink.write(make_run(recent_start(), 1)[0])
        sink.flush(1.0)
        sink.close()
    finally:
        server.shutdown()
        server.server_close()
    assert health.snapshot()["influx.write.errors"] > 0, "the HTTP 500 was not seen as a failed write"
    out = capsys.readouterr()
    assert "pw-s3cret" not in out.out + out.err, "a failed write logged the password in the database URL"
