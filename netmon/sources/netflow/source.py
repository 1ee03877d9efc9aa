"""The ``netflow`` source: NetFlow v5/v9 and IPFIX exports in, UDP/123 observations out.

Listens on UDP (IPv4 and IPv6) or replays pcaps of export traffic; keeps only
records of UDP/123 (``ntp`` = 0, counts sampling-corrected, ``flows`` = 1) and
passes IPFIX dataLinkFrameSection samples on as Frames for the NTP decoder.
Other records are counted (``source.netflow.other_records``), not emitted. When
exports stop, Watermarks move event time on from the last export time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, field_validator

from netmon.batch import Frames, Observations, Watermark
from netmon.config import Settings, Strict
from netmon.sources.netflow.collector import Collector
from netmon.sources.netflow.datagrams import Datagram
from netmon.sources.netflow.incapture import NETFLOW_RECORD_DELAY
from netmon.sources.netflow.listener import Allowlist, Listener, listen_problems, parse_endpoint, replay


def _check_exporters(values: list[str]) -> list[str]:
    Allowlist(values)
    return values


def _check_endpoints(values: list[str]) -> list[str]:
    for value in values:
        parse_endpoint(value)
    return values


class FlowConfig(Strict):
    """Settings every flow source shares (NetFlow/IPFIX and sFlow)."""

    listen: list[str] = Field(default_factory=lambda: ["0.0.0.0:2055", "[::]:2055"], description="host:port to receive exports on")
    paths: list[str] = Field(default_factory=list, description="pcap files of export traffic to replay instead of listening")
    exporters: list[str] = Field(default_factory=list, description="allowed exporter prefixes; empty allows any")
    sampling: dict[str, int] = Field(default_factory=dict, description="exporter address -> 1-in-N rate, overriding what it exports")
    batch_seconds: float = Field(0.5, gt=0, description="longest wait before decoding what has arrived")
    idle_watermark: float = Field(1.0, gt=0, description="seconds without exports before a Watermark is sent")
    record_delay: float = Field(NETFLOW_RECORD_DELAY, ge=0, description="seconds a record may end before the export that carries it "
                                "(the exporter's active/inactive timeout); Watermarks stay this far behind")
    max_queued_bytes: int = Field(64 << 20, ge=65536, description="bytes of datagrams waiting to be decoded; beyond, "
                                  "datagrams are dropped and counted (an exporter gets at most half while others wait)")

    _listen = field_validator("listen")(_check_endpoints)
    _exporters = field_validator("exporters")(_check_exporters)

    @field_validator("sampling")
    @classmethod
    def _rates(cls, value: dict[str, int]) -> dict[str, int]:
        for address, rate in value.items():
            _check_exporters([address])
            if rate < 1:
                raise ValueError(f"sampling rate for {address} must be >= 1 (1-in-N), got {rate}")
        return value


class Config(FlowConfig):
    """``[[sources]] type = "netflow"``: NetFlow v1/v5/v9 and IPFIX."""

    type: Literal["netflow"] = "netflow"
    max_templates: int = Field(65536, ge=1, description="templates kept over all exporters; the least recently announced go first")
    template_lifetime: float = Field(1800.0, ge=0, description="seconds (export time) a template stays valid unless announced again; 0 = forever")
    max_pending: int = Field(4096, ge=0, description="data sets held back until their template arrives")
    max_time_skew: float = Field(600.0, gt=0, description="seconds an export's time may differ from its arrival (or capture) "
                                 "time; beyond, the arrival time is used and the datagram counted per exporter")
    max_templates_per_exporter: int = Field(4096, ge=1, description="templates one exporter may have stored; past it, "
                                            "its own least recently announced go, never another exporter's")
    max_new_templates: int = Field(1024, ge=1, description="new or changed templates one exporter may announce per batch; "
                                   "the rest are dropped and counted (a template flood costs its sender only)")


class FlowSource:
    """Decode export datagrams in batches and yield what the pipeline keeps.

    ``decode`` is the protocol step (datagrams -> records and frames); the rest,
    listening, replaying and watermarks, is shared with the sFlow source.
    """

    name = "netflow"

    def __init__(self, config: FlowConfig, listen: bool = True) -> None:
        """``listen`` False: decoding only (datagrams handed to ``decode`` by another source)."""
        self.config = config
        self.allowlist = Allowlist(config.exporters)
        self.listener: Listener | None = None
        if listen and not config.paths:
            self.listener = Listener(config.listen, self.allowlist, self.name, config.max_queued_bytes)

    @property
    def lateness(self) -> float:
        """Seconds a record may trail newer ones (its flow ended before the export that
        carries it); the pipeline keeps aggregation windows open at least this long."""
        return self.config.record_delay

    def decode(self, batch: list[Datagram]) -> tuple[Observations, Frames | None, float]:
        raise NotImplementedError

    def batches(self) -> Iterator[Frames | Observations | Watermark]:
        if self.listener is None:
            feed = replay(self.config.paths, self.allowlist, self.name)
        else:
            feed = self.listener.receive(self.config.batch_seconds)
        last_time, last_arrival = 0.0, time.monotonic()
        for batch in feed:
            if not batch:
                idle = time.monotonic() - last_arrival
                if self.listener is not None and last_time and idle >= self.config.idle_watermark:
                    yield Watermark(last_time + idle - self.config.record_delay)
                continue
            observations, frames, export = self.decode(batch)
            last_time, last_arrival = max(last_time, export), time.monotonic()
            if len(observations):
                yield observations
            if frames is not None and len(frames):
                yield frames

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()


class NetflowSource(FlowSource):
    """NetFlow v5/v9 and IPFIX."""

    def __init__(self, config: Config, listen: bool = True) -> None:
        super().__init__(config, listen)
        self.collector = Collector(config.sampling, config.max_templates, config.max_pending, ntp_only=True,
                                   template_lifetime=config.template_lifetime, max_time_skew=config.max_time_skew,
                                   max_templates_per_exporter=config.max_templates_per_exporter,
                                   max_new_templates=config.max_new_templates)

    def decode(self, batch: list[Datagram]) -> tuple[Observations, Frames | None, float]:
        """Datagrams to observations (UDP/123 records), frames (sampled frame sections) and the
        latest export time; each export's time is checked against its datagram's arrival."""
        self.collector.feed_batch([d.payload for d in batch], [d.source for d in batch], [d.time for d in batch])
        decoded = self.collector.flush()
        return Observations(decoded.observations), decoded.frames, self.collector.last_export


def build(config: Config, settings: Settings) -> NetflowSource:
    return NetflowSource(config)


def check(config: FlowConfig) -> list[str]:
    """Problems ``check-config`` reports: listen addresses that cannot be bound (a busy port)."""
    return [] if config.paths else listen_problems(config.listen, getattr(config, "type", "flow"))
