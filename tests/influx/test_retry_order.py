"""Retry, backoff, order and gzip, seen from the receiving end: a loopback HTTP server that
refuses the first requests (503) and records every body it accepts."""

from __future__ import annotations

import gzip
import http.server
import threading
import time

import pytest

from netmon import health
from netmon.sinks import influx
from tests.influx.data import make_run, recent_start
from tests.influx.writing import write_all


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first ``refuse`` writes, then 204; keeps accepted bodies in order."""

    refuse = 0
    seen: list[tuple[float, int]] = []
    accepted: list[bytes] = []
    encodings: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((time.monotonic(), len(type(self).seen)))
        if len(type(self).seen) <= type(self).refuse:
            self.send_response(503)
            self.end_headers()
            return
        type(self).encodings.append(self.headers.get("Content-Encoding", ""))
        type(self).accepted.append(gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    Recorder.seen, Recorder.accepted, Recorder.encodings = [], [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_refused_writes_are_retried_with_growing_delays_then_sent_in_order(recorder, tmp_path, api):
    Recorder.refuse = 4
    run = make_run(recent_start(), 10)
    url = f"http://127.0.0.1:{recorder.server_address[1]}"
    sink = influx.build(influx.Config(type="influx", api=api, url=url, spool_dir=str(tmp_path), batch_size=100,
                                      flush_interval=0.05, retry_initial=0.2, retry_max=3.0, close_timeout=30,
                                      health_interval=3600))
    write_all(sink, run)
    written = [line for scored in run for line in influx.scored_lines(scored)]
    received = [line for body in Recorder.accepted for line in body.split(b"\n") if not line.startswith(b"netmon_health")]
    assert received == written, "every point exactly once, in the order written"
    assert set(Recorder.encodings) == {"gzip"}
    assert health.snapshot()["influx.write.retries"] == Recorder.refuse
    gaps = [b[0] - a[0] for a, b in zip(Recorder.seen, Recorder.seen[1:Recorder.refuse + 1])]
    assert all(later > earlier for earlier, later in zip(gaps, gaps[2:])), f"retry delays must grow: {gaps}"


def test_write_does_not_wait_for_a_hanging_database(tmp_path):
    """A database that accepts connections and never answers: write() still returns at once."""
    import socket

    with socket.socket() as hanging:
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(16)  # connections complete in the backlog; nobody ever reads or answers
        url = f"http://127.0.0.1:{hanging.getsockname()[1]}"
        sink = influx.build(influx.Config(type="influx", api="v1", url=url, spool_dir=str(tmp_path), timeout=30,
                                          batch_size=50, flush_interval=0.01, close_timeout=0))
        run = make_run(recent_start(), 20)
        time.sleep(0.2)  # let the sender hang in its first request
        started = time.monotonic()
        for scored in run:
            sink.write(scored)
        spent = time.monotonic() - started
        assert spent < 5, f"write() waited {spent:.1f} s for a database that never answers (timeout 30 s)"
        assert sink.spool.pending_points() > 0
    sink.close()  # the listener is gone: the request in flight fails at once, the points stay spooled
    assert health.snapshot()["influx.spool.points"] > 0
