"""The "pcap" source: capture files (pcap, pcapng, gzip-compressed) replayed in event time.

Config (``[[sources]]`` table)::

    type = "pcap"
    paths = ["monday.pcap.gz", "tuesday.pcapng"]   # read in this order
    progress = false    # force the progress bar (it shows by itself on a terminal)

A corrupt or cut file does not stop the replay: the frames before the fault are
delivered, the error (with its byte offset) is logged, counted as
``source.pcap.corrupt`` and kept in ``errors``, and the next file is read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field, field_validator
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from netmon.batch import Frames
from netmon.config import Strict
from netmon.sources.pcapfile import CaptureError, read_frames

log = structlog.get_logger(__name__)


class Config(Strict):
    """Settings of the pcap source."""

    type: Literal["pcap"] = "pcap"
    paths: list[str] = Field(min_length=1, description="capture files, read in order")
    progress: bool = Field(False, description="show a progress bar even when stderr is not a terminal")

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

    def batches(self) -> Iterator[Frames]:
        total = sum(os.path.getsize(p) for p in self.paths)
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), transient=True, disable=not self.show_progress, console=Console(stderr=True),
        ) as progress:
            task = progress.add_task("replay", total=total)
            done = 0
            for path in self.paths:
                progress.update(task, description=Path(path).name)
                try:
                    yield from read_frames(path, lambda n, base=done: progress.update(task, completed=base + n))
                except CaptureError as exc:
                    self.errors.append(exc)
                    log.error("capture file damaged; frames before the fault were kept", path=path,
                              offset=exc.offset, reason=exc.reason)
                done += os.path.getsize(path)
                progress.update(task, completed=done)

    def close(self) -> None:
        """Nothing stays open between batches: each file is closed when read."""


def check(config: Config) -> list[str]:
    """Capture files this process cannot read (they exist: the config checked that)."""
    return [f"cannot read {path}: permission denied" for path in config.paths if not os.access(path, os.R_OK)]


def build(config: Config, settings: Any = None) -> PcapSource:
    """The pcap source for ``config`` (the pipeline passes the whole settings too)."""
    return PcapSource(config)
