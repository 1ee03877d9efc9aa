"""Real exporters for the flow tests: an NTP capture to export, the collector on loopback, daemons by PID."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from netmon.batch import OBS_DTYPE, Observations, addr_halves, addr_text
from netmon.config import plugin_config
from netmon.decode.encode import frames_from_observations
from netmon.decode.frames import decode_frames
from netmon.sources.pcapfile import read_frames, write_pcap
from tests.support.lab import wait_for

__all__ = ["Collecting", "capture_truth", "ntp_rows", "pair_totals", "stop_process", "wait_for", "write_capture"]


def ntp_rows(seed: int = 7, hosts: int = 12, ipv6: bool = True, start: float = 1_700_000_000.0) -> tuple[np.ndarray, np.ndarray]:
    """(NTP rows, background TCP rows): clients polling servers, replies, and some HTTPS around them."""
    rng = np.random.default_rng(seed)
    rows = []
    clients = [f"10.1.0.{i + 1}" for i in range(hosts)] + ([f"2001:db8:1::{i + 1:x}" for i in range(hosts // 2)] if ipv6 else [])
    for c, client in enumerate(clients):
        server = ("2001:db8:ff::1" if ":" in client else f"192.0.2.{1 + c % 3}")
        port = 123 if c % 3 == 0 else int(rng.integers(1024, 65535))
        for k in range(int(rng.integers(3, 40))):
            t = start + float(rng.uniform(0, 300)) + k
            rows.append((t, client, server, port, 123, 3))
            if rng.random() < 0.9:
                rows.append((t + 0.01, server, client, 123, port, 4))
    out = np.zeros(len(rows), OBS_DTYPE)
    for i, (t, src, dst, sport, dport, mode) in enumerate(rows):
        out[i]["time"] = t
        out[i]["src_hi"], out[i]["src_lo"] = addr_halves(src)
        out[i]["dst_hi"], out[i]["dst_lo"] = addr_halves(dst)
        out[i]["sport"], out[i]["dport"], out[i]["mode"], out[i]["version"] = sport, dport, mode, 4
        out[i]["packets"], out[i]["ntp"], out[i]["stratum"], out[i]["poll"] = 1, 1, 2, 6
    background = out[: min(50, len(out))].copy()
    background["sport"], background["dport"] = 443, 50000
    background["time"] += 0.5
    return np.sort(out, order="time"), np.sort(background, order="time")


def write_capture(path: Path, ntp: np.ndarray, background: np.ndarray) -> None:
    """One Ethernet pcap of the NTP rows and the background rows (TCP), in time order."""
    rows = np.concatenate([ntp, background])
    protocol = np.concatenate([np.full(len(ntp), 17), np.full(len(background), 6)])
    order = np.argsort(rows["time"], kind="stable")
    write_pcap(path, frames_from_observations(rows[order], protocol=protocol[order]))


def pair_totals(rows: np.ndarray, v4_only: bool = False) -> Counter:
    """(src, dst) -> (packets, bytes) of UDP/123 rows, sampling-corrected as the rows say."""
    out: Counter = Counter()
    for r in rows:
        src, dst = addr_text(r["src_hi"], r["src_lo"]), addr_text(r["dst_hi"], r["dst_lo"])
        if v4_only and ":" in src:
            continue
        out[(src, dst, "packets")] += float(r["packets"])
        out[(src, dst, "bytes")] += float(r["bytes"])
    return out


def capture_truth(path: Path) -> np.ndarray:
    """The capture read directly: decode every frame (the pcap source's path)."""
    return np.concatenate([decode_frames(f) for f in read_frames(path)])


class Collecting:
    """A netflow or sflow source on loopback, consumed by a thread until stopped."""

    def __init__(self, kind: str, **options) -> None:
        from netmon.registry import plugin

        config = plugin_config("source", {"type": kind, "listen": ["127.0.0.1:0"], "batch_seconds": 0.1, **options})
        self.source = plugin("source", kind).build(config, None)
        self.port = self.source.listener.ports[0]
        self.rows: list[np.ndarray] = []
        self.frames = []
        self.watermarks = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for item in self.source.batches():
            if isinstance(item, Observations):
                self.rows.append(item.rows)
            elif hasattr(item, "caplen"):
                self.frames.append(item)
            else:
                self.watermarks.append(item)

    def observations(self) -> np.ndarray:
        decoded = [decode_frames(f) for f in self.frames]
        parts = self.rows + decoded
        return np.concatenate(parts) if parts else np.zeros(0, OBS_DTYPE)

    def stop(self, settle: float = 0.5) -> None:
        time.sleep(settle)
        self.source.close()
        self._thread.join(timeout=5)


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a daemon this test started, by its PID."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
