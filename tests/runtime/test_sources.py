"""Issue 11 runtime, item 1: a source that raises is restarted with backoff and counted; the other
sources keep going and the run never ends because of it. A replay that fails is not read twice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from netmon import health, pipeline
from netmon.batch import Observations, Watermark
from netmon.retry import Backoff
from netmon.runtime.sources import Supervised
from tests.runtime.support import requests, settings, stages

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "campus-runaway.pcap.gz"
START = 1_700_000_000.0


class Flaky:
    """A live source whose first life raises mid-stream (a decoder bug on one datagram: a fault
    a real exporter cannot be made to show on demand); its next life delivers and ends."""

    lives = 0

    def __init__(self) -> None:
        type(self).lives += 1
        self.life = type(self).lives

    def batches(self) -> Iterator[Observations | Watermark]:
        yield Observations(requests([START + self.life], host=f"10.20.0.{self.life}"))
        if self.life == 1:
            raise OverflowError("Python int too large to convert to C int")
        yield Watermark(START + 100)

    def close(self) -> None:
        pass


def test_failed_source_is_restarted_with_backoff_and_others_keep_going(tmp_path):
    health.reset()
    Flaky.lives = 0
    config = settings(tmp_path, sources=[{"type": "pcap", "paths": [str(SAMPLE)]}],
                      campus={"internal": ["10.20.0.0/16"]}, aggregate={"interval": 60})
    replay = pipeline.build_sources(config)
    flaky = Supervised("flaky", None, Flaky(), Flaky, lateness=0.0, replay=False, backoff=Backoff(0.01, 0.05))
    summary = pipeline.Pipeline(stages(config, replay + [flaky])).run(threading.Event())
    counters = health.snapshot()
    assert counters["pipeline.source.flaky.failed"] == 1, "the failure must be counted once"
    assert counters["pipeline.source.flaky.restarts"] == 1, "the failed live source must be built again"
    assert Flaky.lives == 2
    assert summary.intervals > 1, "the replay beside the failing source must run to its end"
    assert summary.failed_sources == [], "a restarted live source did not fail the run"


class Broken:
    """A replay that fails after one batch (a damaged file its reader did not catch)."""

    def batches(self) -> Iterator[Observations]:
        yield Observations(requests([START]))
        raise ValueError("damaged record")

    def close(self) -> None:
        pass


def test_failed_replay_is_counted_not_restarted_and_the_run_ends(tmp_path):
    health.reset()
    config = settings(tmp_path)
    built = []
    broken = Supervised("pcap", None, Broken(), lambda: built.append(1) or Broken(), lateness=0.0, replay=True,
                        backoff=Backoff(0.01, 0.05))
    summary = pipeline.Pipeline(stages(config, [broken])).run(threading.Event())
    assert built == [], "a replay must not be read twice"
    assert summary.failed_sources == ["pcap"]
    assert summary.intervals == 1, "rows read before the failure are kept"
    assert health.snapshot()["pipeline.source.pcap.failed"] == 1


class Deaf:
    """A live source that ignores stop() and never ends (a driver stuck in a read)."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def batches(self) -> Iterator[Watermark]:
        while not self.closed.wait(0.05):
            yield Watermark(START)

    def stop(self) -> None:
        """Ignored: the fault under test."""

    def close(self) -> None:
        self.closed.set()


def test_shutdown_completes_when_a_source_ignores_stop(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "STOP_TIMEOUT", 0.5)
    deaf = Deaf()
    slot = Supervised("deaf", None, deaf, Deaf, lateness=0.0, replay=False, backoff=Backoff(0.01, 0.05))
    stop = threading.Event()
    stop.set()
    pipeline.Pipeline(stages(settings(tmp_path), [slot])).run(stop)
    assert deaf.closed.is_set(), "the source that did not end was not closed"
