"""``[[sinks]] type = "evidence"``: where evidence reports live, and packets of flagged hosts.

A live source has no capture file to cut an excerpt from, so this sink keeps one
small ring of raw frames per flagged host: once a host has a finding, its UDP/123
frames (both directions) are kept, at most ``packets_per_host`` frames and
``bytes_per_host`` captured bytes each (the oldest go first), for at most
``max_hosts`` hosts (the host flagged longest ago goes first), and the ring is
written as ``<dir>/<host>/packets.pcap`` after every interval that added to it.
``netmon evidence`` and ``netmon serve`` cut the report's excerpt from that file.
A host with no finding for ``keep_for`` seconds (event time) loses its ring.

The pipeline hands frames to any sink with a ``frames(frames, rows, index)``
method, after decoding and before aggregation, and each scored interval to its
``flag(scored)`` as it is delivered, both from the pipeline's thread: which frames a
ring keeps follows event order, not how far the sink's own thread lags behind.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
from pydantic import Field, field_validator

from netmon import health
from netmon.batch import Frames, Scored
from netmon.config import SinkOptions, load
from netmon.paths import creatable, data_path
from netmon.sinks.alerts.model import host_slug

log = structlog.get_logger(__name__)

PACKETS_FILE = "packets.pcap"


class Config(SinkOptions):
    """``[[sinks]] type = "evidence"``."""

    type: Literal["evidence"] = "evidence"
    dir: str = Field(default_factory=partial(data_path, "evidence"),
                     description="directory of the reports, one sub-directory per host (default: evidence/ in the data directory)")
    listen: str = Field("", description="host:port where `netmon run` serves the reports read-only over HTTP "
                                        "(empty: not served; `netmon serve` can do it)")
    url_path: str = Field("/evidence/", description="URL path the reports are served under; "
                                                    "evidence_url = http://HOST:PORT{url_path}{host}/report.html")
    packets_per_host: int = Field(2000, ge=0, le=1_000_000, description="frames kept per flagged host (0: none)")
    bytes_per_host: int = Field(500_000, ge=0, le=1_000_000_000, description="captured bytes kept per flagged host "
                                "(memory: at most max_hosts x this)")
    max_hosts: int = Field(200, ge=1, le=100_000, description="flagged hosts with a packet ring at once")
    keep_for: float = Field(86400.0, gt=0, description="seconds after a host's last finding its ring is kept")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:
            parse_listen(value)
        return value


def host_masks(host: str) -> tuple[int, int, int, int]:
    """(hi, lo, hi mask, lo mask) of a host address or prefix key, in the OBS_DTYPE address form."""
    net = ipaddress.ip_network(host, strict=False)
    if net.version == 4:
        net = ipaddress.ip_network(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
    value, bits = int(net.network_address), net.prefixlen
    mask = ((1 << 128) - 1) ^ ((1 << (128 - bits)) - 1)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF, mask >> 64, mask & 0xFFFF_FFFF_FFFF_FFFF


def matches(rows: np.ndarray, host: str) -> np.ndarray:
    """Rows (OBS_DTYPE) from or to ``host`` (an address or an IPv6 prefix key)."""
    hi, lo, mhi, mlo = (np.uint64(v) for v in host_masks(host))
    src = ((rows["src_hi"] & mhi) == hi) & ((rows["src_lo"] & mlo) == lo)
    dst = ((rows["dst_hi"] & mhi) == hi) & ((rows["dst_lo"] & mlo) == lo)
    return src | dst


@dataclass
class Ring:
    """One host's latest frames: (time, linktype, wire length, bytes), bounded by count and bytes."""

    limit: int
    byte_limit: int
    last_flagged: float
    frames: deque = field(default_factory=deque)
    size: int = 0
    dirty: bool = False

    def add(self, time: float, linktype: int, wirelen: int, data: bytes) -> None:
        self.frames.append((time, linktype, wirelen, data))
        self.size += len(data)
        while self.frames and (len(self.frames) > self.limit or self.size > self.byte_limit):
            self.size -= len(self.frames.popleft()[3])
        self.dirty = True

    def to_frames(self) -> Frames:
        """The ring's frames of its most common link type (a pcap holds one), in time order."""
        items = sorted(self.frames, key=lambda f: f[0])
        kinds = [f[1] for f in items]
        main = max(set(kinds), key=kinds.count)
        items = [f for f in items if f[1] == main]
        caplen = np.array([len(f[3]) for f in items], dtype=np.uint32)
        offset = np.zeros(len(items), dtype=np.int64)
        offset[1:] = np.cumsum(caplen, dtype=np.int64)[:-1]
        return Frames(
            data=np.frombuffer(b"".join(f[3] for f in items), dtype=np.uint8),
            offset=offset, caplen=caplen,
            wirelen=np.array([f[2] for f in items], dtype=np.uint32),
            time=np.array([f[0] for f in items], dtype=np.float64),
            linktype=np.full(len(items), main, dtype=np.uint16),
            weight=np.ones(len(items), dtype=np.float32),
        )


class EvidenceSink:
    """Keeps packet rings for flagged hosts and writes them next to their reports.

    ``frames`` and ``flag`` are called from the pipeline's thread, ``write`` (which only
    writes the rings out) from the sink's own (:mod:`netmon.runtime.sinks`): one lock
    guards the rings."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.dir = Path(config.dir)
        self.rings: OrderedDict[str, Ring] = OrderedDict()
        self.lock = threading.Lock()

    def frames(self, frames: Frames, rows: np.ndarray, index: np.ndarray) -> None:
        """Keep the frames of flagged hosts (``index``: each decoded row's frame in ``frames``)."""
        if not self.rings or not len(rows) or self.config.packets_per_host == 0:
            return
        with self.lock:
            self._keep(frames, rows, index)

    def _keep(self, frames: Frames, rows: np.ndarray, index: np.ndarray) -> None:
        for host, ring in self.rings.items():
            chosen = np.unique(index[matches(rows, host)])
            for i in chosen.tolist():
                start = int(frames.offset[i])
                ring.add(float(frames.time[i]), int(frames.linktype[i]), int(frames.wirelen[i]),
                         frames.data[start:start + int(frames.caplen[i])].tobytes())
            health.count("evidence.frames_kept", len(chosen))

    def flag(self, scored: Scored) -> None:
        """Start a ring for every newly flagged host; drop stale ones (the pipeline's thread)."""
        with self.lock:
            self._flag(scored)

    def write(self, scored: Scored) -> None:
        """Write the rings that grew (the sink's thread: file I/O off the pipeline)."""
        with self.lock:
            self.flush()

    def _flag(self, scored: Scored) -> None:
        now = float(scored.intervals.end)
        for finding in scored.findings:
            ring = self.rings.pop(finding.host, None) or Ring(self.config.packets_per_host, self.config.bytes_per_host, now)
            ring.last_flagged = now
            self.rings[finding.host] = ring
        while len(self.rings) > self.config.max_hosts:
            self.rings.popitem(last=False)
        for host in [h for h, r in self.rings.items() if now - r.last_flagged > self.config.keep_for]:
            del self.rings[host]
        health.gauge("evidence.ring_hosts", len(self.rings))
        health.gauge("evidence.ring_bytes", sum(r.size for r in self.rings.values()))

    def flush(self) -> None:
        from netmon.sources.pcapfile import write_pcap

        for host, ring in self.rings.items():
            if not ring.dirty or not ring.frames:
                continue
            target = self.dir / host_slug(host) / PACKETS_FILE
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(".tmp")
                write_pcap(partial, ring.to_frames())
                partial.replace(target)
                ring.dirty = False
            except OSError as exc:
                log.error("cannot write a flagged host's packets", path=str(target), error=exc.strerror)
                health.count("evidence.write_errors")

    def close(self) -> None:
        with self.lock:
            self.flush()


def build(config: Config, settings: Any = None) -> EvidenceSink:
    return EvidenceSink(config)


def check(config: Config) -> list[str]:
    """The evidence directory must be creatable and writable."""
    return creatable(config.dir, "dir", directory=True)


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:8123`` or ``[::1]:8123`` -> (address, port); ValueError names the problem."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"listen {text!r}: give ADDRESS:PORT, e.g. 127.0.0.1:8123") from None
    if not sep or not 0 < number < 65536:
        raise ValueError(f"listen {text!r}: the port must be 1-65535")
    return host, number


@dataclass(frozen=True)
class Location:
    """Where one host's report goes, and the packets the live collector kept for it (if any)."""

    directory: Path
    packets: Path | None


def configured(config_path: str | None) -> Config:
    """The config's evidence sink table, or the defaults; ConfigError names a bad key."""
    settings = load(config_path)  # a bad key is a ConfigError naming it
    return next((c for c in settings.sinks if c.type == "evidence"), None) or Config()


def locate(config_path: str | None, host: str) -> Location:
    directory = Path(configured(config_path).dir) / host_slug(host)
    packets = directory / PACKETS_FILE
    return Location(directory, packets if packets.exists() else None)
