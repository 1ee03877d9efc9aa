"""Issue 14 replay: a run of replays only reads its files in the pipeline's own thread (no source
thread, no queue hand-over per batch) and finds exactly what the threaded run finds; a run with
any live source, or a service's reload hook, keeps the threads and their watermarks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from netmon import pipeline
from netmon.batch import Observations, Watermark
from netmon.retry import Backoff
from netmon.runtime.sources import Supervised
from tests.runtime.support import requests, settings, stages

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "campus-runaway.pcap.gz"
START = 1_700_000_000.0


class Recorded:
    """A source that notes the thread its batches are read in."""

    def __init__(self, host: str, times: list[float]) -> None:
        self.host, self.times = host, times
        self.threads: set[str] = set()

    def batches(self) -> Iterator[Observations | Watermark]:
        for t in self.times:
            self.threads.add(threading.current_thread().name)
            yield Observations(requests([t], host=self.host))

    def close(self) -> None:
        pass


def _slot(tag: str, source: Recorded, replay: bool) -> Supervised:
    return Supervised(tag, None, source, lambda: source, lateness=0.0, replay=replay, backoff=Backoff(0.01, 0.05))


def _sample(tmp_path: Path):
    return settings(tmp_path, sources=[{"type": "pcap", "paths": [str(SAMPLE)]}],
                    campus={"internal": ["10.20.0.0/16"]}, aggregate={"interval": 60})


def test_a_replay_is_read_in_the_pipelines_thread(tmp_path):
    source = Recorded("10.20.0.5", [START + 10 * i for i in range(30)])
    summary = pipeline.Pipeline(stages(settings(tmp_path), [_slot("replay", source, replay=True)])).run(threading.Event())
    assert source.threads == {threading.current_thread().name}, f"the replay was read in {source.threads}"
    assert summary.intervals == 30, "every row of the replay must reach the detectors"


def test_two_replays_read_in_turn_close_windows_as_they_go(tmp_path):
    """Read one item of each in turn: both watermarks move, so windows close during the run
    instead of every row of the first file waiting in the aggregator for the second to start."""
    a = Recorded("10.20.0.5", [START + 10 * i for i in range(30)])
    b = Recorded("10.20.0.6", [START + 10 * i for i in range(30)])
    config = settings(tmp_path)
    run = stages(config, [_slot("a", a, True), _slot("b", b, True)])
    delivered_during_reads: list[int] = []
    batches = a.batches

    def counting() -> Iterator[Observations | Watermark]:
        for item in batches():
            delivered_during_reads.append(runner.summary.intervals)
            yield item

    a.batches = counting  # type: ignore[method-assign]
    runner = pipeline.Pipeline(run)
    summary = runner.run(threading.Event())
    assert max(delivered_during_reads) > 0, "no window closed while the replays were read: they were not read in turn"
    assert summary.intervals == 30, "each 10 s window of both replays must be scored once"


def test_a_live_source_beside_a_replay_keeps_the_threads(tmp_path):
    replay = Recorded("10.20.0.5", [START + 10 * i for i in range(5)])
    live = Recorded("10.20.0.6", [START + 10 * i for i in range(5)])
    pipeline.Pipeline(stages(settings(tmp_path), [_slot("replay", replay, True), _slot("live", live, False)])).run(
        threading.Event())
    assert replay.threads == {"source-replay"} and live.threads == {"source-live"}


def test_a_service_with_a_reload_hook_keeps_the_threads(tmp_path):
    """A reload may add a live source at any time, so a service never reads in its own thread."""
    replay = Recorded("10.20.0.5", [START + 10 * i for i in range(5)])
    pipeline.Pipeline(stages(settings(tmp_path), [_slot("replay", replay, True)])).run(threading.Event(), lambda: None)
    assert replay.threads == {"source-replay"}


def test_the_sample_replay_finds_the_same_read_inline_or_in_threads(tmp_path):
    inline = pipeline.Pipeline(stages(_sample(tmp_path / "a"), pipeline.build_sources(_sample(tmp_path / "a"))))
    threaded = pipeline.Pipeline(stages(_sample(tmp_path / "b"), pipeline.build_sources(_sample(tmp_path / "b"))))
    first = inline.run(threading.Event())
    second = threaded.run(threading.Event(), lambda: None)
    assert first.intervals == second.intervals > 0
    assert [f.to_json() for f in first.findings] == [f.to_json() for f in second.findings], \
        "reading the replay in the pipeline's thread changed the findings"


def test_a_stopped_replay_is_not_read_further(tmp_path):
    stop = threading.Event()
    times = [START + 10 * i for i in range(100)]
    source = Recorded("10.20.0.5", times)
    batches = source.batches

    def stopping() -> Iterator[Observations | Watermark]:
        for n, item in enumerate(batches()):
            if n == 10:
                stop.set()  # SIGINT while the file is read
            yield item

    source.batches = stopping  # type: ignore[method-assign]
    summary = pipeline.Pipeline(stages(settings(tmp_path), [_slot("replay", source, True)])).run(stop)
    assert 0 < summary.intervals <= 11, f"{summary.intervals} intervals: the replay went on after stop"
