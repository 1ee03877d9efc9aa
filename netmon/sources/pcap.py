"""The "pcap" source: capture files (pcap, pcapng, gzip-compressed) replayed in event time.

Config (``[[sources]]`` table)::

    type = "pcap"
    paths = ["monday.pcap.gz", "tuesday.pcapng"]   # read in this order
    progress = false    # force the progress bar (it shows by itself on a terminal)
    netflow_ports = [2055, 4739, 9995, 9996]   # flow exports in the capture: decoded as
    sflow_ports = [6343]                        # the netflow / sflow sources would; [] = ignore

A corrupt or cut file does not stop the replay: the frames before the fault are
delivered, the error (with its byte offset) is logged, counted as
``source.pcap.corrupt`` and kept in ``errors``, and the next file is read.

UDP datagrams sent to the flow ports are NetFlow/IPFIX/sFlow exports (a tcpdump of
an exporter's stream): they go through the flow sources' decoders
(:mod:`netmon.sources.netflow.incapture`), strictly validated, into the same
aggregation as the capture's own NTP packets.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field, field_validator

from netmon.batch import Frames, Observations
from netmon.config import Strict
from netmon.sources.netflow.incapture import NETFLOW_PORTS, SFLOW_PORTS, ExportRouter
from netmon.sources.pcapfile import CaptureError, read_frames

log = structlog.get_logger(__name__)


class Config(Strict):
    """Settings of the pcap source."""

    type: Literal["pcap"] = "pcap"
    paths: list[str] = Field(min_length=1, description="capture files, read in order")
    progress: bool = Field(False, description="show a progress bar even when stderr is not a terminal")
    netflow_ports: list[int] = Field(default_factory=lambda: list(NETFLOW_PORTS),
                                     description="UDP ports whose datagrams are NetFlow/IPFIX exports to decode; [] = none")
    sflow_ports: list[int] = Field(default_factory=lambda: list(SFLOW_PORTS),
                                   description="UDP ports whose datagrams are sFlow to decode; [] = none")

    @field_validator("paths")
    @classmethod
    def _exist(cls, value: list[str]) -> list[str]:
        missing = [p for p in value if not Path(p).is_file()]
        if missing:
            raise ValueError(f"no such capture file: {', '.join(missing)}")
        return value


class PcapSource:
    """Reads the configured files one after the other, a chunk of Frames at a time."""

    def __init__(self, config: Config) -> None:
        self.paths = list(config.paths)
        self.show_progress = config.progress or sys.stderr.isatty()
        self.errors: list[CaptureError] = []
        self.exports = ExportRouter(config.netflow_ports, config.sflow_ports)

    @property
    def lateness(self) -> float:
        """Flow records in the capture trail its newest packets by up to the flow sources' record delay."""
        return self.exports.lateness

    def batches(self) -> Iterator[Frames | Observations]:
        if not self.show_progress:
            yield from self._read(lambda name, done: None)
            return
        from rich.console import Console  # the bar's imports, only where a bar shows
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), transient=True, console=Console(stderr=True),
        ) as progress:
            task = progress.add_task("replay", total=sum(os.path.getsize(p) for p in self.paths))
            yield from self._read(lambda name, done: progress.update(task, description=name, completed=done))

    def _read(self, show: Callable[[str, int], None]) -> Iterator[Frames | Observations]:
        """Every file's batches in turn; ``show(file name, bytes of all files read so far)`` as it goes."""
        done = 0
        for path in self.paths:
            name = Path(path).name
            show(name, done)
            try:
                for frames in read_frames(path, lambda n, base=done: show(name, base + n)):
                    exports = list(self.exports.route(frames))  # parses the batch before it is queued:
                    yield frames                                # the NTP decoder takes that parse
                    yield from exports
            except CaptureError as exc:
                self.errors.append(exc)
                log.error("capture file damaged; frames before the fault were kept", path=path,
                          offset=exc.offset, reason=exc.reason)
            done += os.path.getsize(path)
            show(name, done)

    def close(self) -> None:
        """Nothing stays open between batches: each file is closed when read."""


def check(config: Config) -> list[str]:
    """Capture files this process cannot read (they exist: the config checked that)."""
    return [f"cannot read {path}: permission denied" for path in config.paths if not os.access(path, os.R_OK)]


def build(config: Config, settings: Any = None) -> PcapSource:
    """The pcap source for ``config`` (the pipeline passes the whole settings too)."""
    return PcapSource(config)
