"""eBPF source: a tc (clsact) program counts UDP/123 per host in the kernel and samples headers.

Every ``read_interval`` seconds user space reads the per-(host, direction, mode) counters
with batch lookups and drains the ring buffer of sampled frame heads:

* each sampled head becomes a frame (:class:`~netmon.batch.Frames`, weight 1) that the
  pipeline decodes like a capture, so it carries every NTP field;
* what the counters saw beyond the samples (a flood past the sampling cap) becomes
  header-less :class:`~netmon.batch.Observations` rows like flow records (``ntp`` = 0;
  port 123 on the server's end, the other port 0 = unknown; ``mode``, ``version`` and
  the KoD code in ``ref_id`` kept as hints), one per (host, direction, mode, KoD code),
  stamped with the read time.

The kernel counts a packet as sampled only once its head is in the ring buffer, and the
counters are read before the ring is drained, so samples plus the rest add up to exactly
the packets and IP bytes the kernel counted: nothing is counted twice or lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import structlog
from pydantic import Field

from netmon import health
from netmon.batch import Frames, Observations, Watermark, empty_observations
from netmon.config import Settings, Strict
from netmon.sources import live
from netmon.sources.ebpf import loader
from netmon.sources.ebpf.libbpf import RingBuffer

log = structlog.get_logger(__name__)

LINKTYPE_ETHERNET = 1
FRAME_STRIDE = loader.SNAP + 4  # room to put an offloaded VLAN tag back


class Config(Strict):
    """``[[sources]] type = "ebpf"``: the tc program on one interface."""

    type: Literal["ebpf"]
    interface: str = Field(description="interface to attach to (ingress and egress), e.g. the campus uplink")
    netns: str = Field("", description="network namespace of the interface (ip netns name); empty = this one")
    max_hosts: int = Field(262144, ge=1024, description="counter entries: (host, direction, mode) keys, LRU")
    sample_rate: float = Field(20000.0, ge=0, description="NTP headers per second sent to user space at most")
    sample_burst: float = Field(2000.0, ge=1, description="headers allowed in a burst above the rate")
    read_interval: float = Field(2.0, gt=0, description="seconds between reads of the kernel counters")
    object: str = Field("", description="prebuilt BPF object; empty = build ntp_tc.c with clang (cached)")


def build(config: Config, settings: Settings) -> "EbpfSource":
    return EbpfSource(config, list(settings.campus.internal))


def check(config: Config) -> list[str]:
    """What would stop the source from starting here (for ``netmon check-config``)."""
    found = []
    steps = [loader.check_privileges, loader.check_kernel, lambda: _interface(config)]
    if not config.object:
        steps.append(loader.check_toolchain)
    for step in steps:
        try:
            step()
        except loader.LiveError as exc:
            found.append(str(exc))
    return found


def _interface(config: Config) -> None:
    with live.netns(config.netns):
        live.interface_index(config.interface)


def frames_from_samples(records: np.ndarray, clock_offset: float) -> Frames:
    """Frames from ring buffer records (SAMPLE_DTYPE), offloaded VLAN tags put back in place.

    ``clock_offset`` turns the kernel's CLOCK_MONOTONIC ns into UNIX seconds.
    """
    n = len(records)
    tagged = records["vlan_proto"] != 0
    caplen = records["caplen"].astype(np.int64)
    out = np.zeros((n, FRAME_STRIDE), np.uint8)
    data = records["data"]
    out[:, :12] = data[:, :12]
    out[~tagged, 12:loader.SNAP] = data[~tagged, 12:]
    if tagged.any():
        out[tagged, 12:14] = records["vlan_proto"][tagged].astype(">u2").view(np.uint8).reshape(-1, 2)
        out[tagged, 14:16] = records["vlan_tci"][tagged].astype(">u2").view(np.uint8).reshape(-1, 2)
        out[tagged, 16:] = data[tagged, 12:]
    extra = np.where(tagged, 4, 0)
    return Frames(
        data=out.reshape(-1),
        offset=np.arange(n, dtype=np.int64) * FRAME_STRIDE,
        caplen=caplen + extra,
        wirelen=records["wirelen"].astype(np.int64) + extra,
        time=records["ktime_ns"].astype(np.float64) / 1e9 + clock_offset,
        linktype=np.full(n, LINKTYPE_ETHERNET, np.uint16),
        weight=np.ones(n, np.float64),
    )


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 column."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def key_hash(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash per counter key (24 bytes = 3 words); 10^5 keys collide with odds ~10^-9."""
    words = np.ascontiguousarray(keys).view(np.uint64).reshape(-1, 3)
    with np.errstate(over="ignore"):
        return _mix(_mix(_mix(words[:, 0]) ^ words[:, 1]) ^ words[:, 2])


class CounterDeltas:
    """Turns cumulative kernel counters into what has not been emitted yet.

    Per key it remembers the packets and bytes emitted as header-less rows so far;
    what the kernel counted minus what it sampled, minus what was emitted, is new.
    An LRU-evicted key that comes back starts again from zero.
    """

    def __init__(self) -> None:
        self.keys = np.empty(0, np.uint64)  # key hashes, sorted
        self.total = np.empty(0, np.int64)
        self.emitted_packets = np.empty(0, np.int64)
        self.emitted_bytes = np.empty(0, np.int64)

    def update(self, keys: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, packets, bytes) not yet emitted, for keys with something new."""
        hashes = key_hash(keys)
        packets = vals["packets"].astype(np.int64)
        done_p = np.zeros(len(keys), np.int64)
        done_b = np.zeros(len(keys), np.int64)
        if len(self.keys):
            idx = np.minimum(np.searchsorted(self.keys, hashes), len(self.keys) - 1)
            known = (self.keys[idx] == hashes) & (packets >= self.total[idx])
            done_p[known] = self.emitted_packets[idx[known]]
            done_b[known] = self.emitted_bytes[idx[known]]
        rest_p = packets - vals["sampled_packets"].astype(np.int64)
        rest_b = vals["bytes"].astype(np.int64) - vals["sampled_bytes"].astype(np.int64)
        new_p = np.maximum(rest_p - done_p, 0)
        new_b = np.maximum(rest_b - done_b, 0)
        order = np.argsort(hashes)  # plain columns only: reordering the structured arrays is slow
        self.keys, self.total = hashes[order], packets[order]
        self.emitted_packets, self.emitted_bytes = (done_p + new_p)[order], (done_b + new_b)[order]
        fresh = (new_p > 0) | (new_b > 0)
        return keys[fresh], new_p[fresh], new_b[fresh]


def rows_from_counts(keys: np.ndarray, packets: np.ndarray, nbytes: np.ndarray, when: float) -> np.ndarray:
    """Header-less observation rows for counter deltas (KEY_DTYPE keys), stamped ``when``."""
    rows = empty_observations(len(keys))
    out = keys["dir"] == loader.DIR_OUT
    hi, lo = keys["host_hi"].astype(np.uint64), keys["host_lo"].astype(np.uint64)
    rows["time"] = when
    rows["src_hi"] = np.where(out, hi, 0)
    rows["src_lo"] = np.where(out, lo, 0)
    rows["dst_hi"] = np.where(out, 0, hi)
    rows["dst_lo"] = np.where(out, 0, lo)
    # Ports say which end is the server, as for flow records: port 123 on the receiving
    # end of a request (modes 1, 3, 6, 7) and on the sending end of a reply.
    request = np.isin(keys["mode"], (1, 3, 6, 7))
    rows["dport"] = np.where(request, 123, 0)
    rows["sport"] = np.where(request, 0, 123)
    rows["packets"] = packets
    rows["bytes"] = nbytes
    rows["mode"] = np.where(keys["mode"] > 7, 0, keys["mode"])
    rows["version"] = keys["version"]
    rows["ref_id"] = keys["kod"]
    return rows


class EbpfSource:
    """Live source: attach, then yield frames, header-less rows and watermarks until closed."""

    def __init__(self, config: Config, internal: list[str]) -> None:
        self.config = config
        self.internal = internal
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._attachment: loader.Attachment | None = None
        self._ring: RingBuffer | None = None
        self._generator: Generator | None = None
        self._counter_full = 0

    def open(self) -> loader.Attachment:
        """Load and attach (idempotent); errors are LiveError with what to install or grant."""
        with self._lock:
            if self._attachment is None:
                c = self.config
                obj = Path(c.object) if c.object else None
                att = loader.attach(c.interface, c.netns, c.max_hosts, obj)
                try:
                    att.set_internal(self.internal)
                    att.set_sampling(c.sample_rate, c.sample_burst)
                except Exception:
                    loader.detach(att)
                    raise
                self._attachment = att
            return self._attachment

    def batches(self) -> Iterator[Frames | Observations | Watermark]:
        """Items until :meth:`close`; the last read after the stop flushes what is left."""
        self._generator = self._batches(self.open())
        return self._generator

    def _batches(self, att: loader.Attachment) -> Iterator[Frames | Observations | Watermark]:
        records: list[bytes] = []
        self._ring = RingBuffer(att.maps["netmon_samples"], records.append)
        deltas = CounterDeltas()
        next_read = time.monotonic() + self.config.read_interval
        try:
            while not self._stop.is_set():
                self._ring.poll(100)
                if time.monotonic() >= next_read or len(records) >= 65536:
                    next_read = time.monotonic() + self.config.read_interval
                    yield from self._read(att, deltas, records)
            yield from self._read(att, deltas, records)
        finally:
            self._teardown()

    def _read(self, att: loader.Attachment, deltas: CounterDeltas, records: list[bytes]) -> Iterator:
        """Counters first, then the ring: every sample the counters include is drained."""
        keys, vals = att.read_counters()
        now = time.time()
        offset = now - time.monotonic()
        if self._ring is not None:
            self._ring.consume()
        health.gauge("source.ebpf.counter_entries", len(keys))  # against max_hosts
        health.gauge("source.ebpf.muzzled", float(vals["muzzled"].sum()))
        events = att.events()
        for name, value in events.items():
            health.gauge(f"source.ebpf.{name}", value)
        if events["counter_full"] > self._counter_full:
            log.warning("ebpf: the counter map is full, packets went uncounted; raise max_hosts",
                        uncounted=events["counter_full"] - self._counter_full, max_hosts=self.config.max_hosts)
            self._counter_full = events["counter_full"]
        if records:
            samples = np.frombuffer(b"".join(records), dtype=loader.SAMPLE_DTYPE)
            records.clear()
            health.count("source.ebpf.samples", len(samples))
            yield frames_from_samples(samples, offset)
        new_keys, packets, nbytes = deltas.update(keys, vals)
        if len(new_keys):
            health.count("source.ebpf.unsampled_packets", float(packets.sum()))
            yield Observations(rows_from_counts(new_keys, packets, nbytes, now))
        yield Watermark(now)

    def stop(self) -> None:
        """Ask :meth:`batches` to read the counters a last time, yield, detach and end.

        Only sets a flag, so it is safe in a signal handler and from another thread.
        """
        self._stop.set()

    def close(self) -> None:
        """Stop and detach now (the contract's close); safe to call twice.

        A generator running in another thread is only asked to stop: it detaches itself.
        """
        if live.end(self._stop, self._generator):
            self._teardown()

    def _teardown(self) -> None:
        with self._lock:
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            if self._attachment is not None:
                loader.detach(self._attachment)
                self._attachment = None
