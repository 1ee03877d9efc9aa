"""Replay speed: netmon's decode (and aggregation) beside tshark, tcpdump, dpkt and scapy on one capture.

Builds a capture of campus egress with netmon's own encoder: ``--packets`` frames
(default 1,000,000) over an hour, ``--ntp-share`` of them NTP (default 4 %: client
requests from ``--hosts`` internal hosts to 40 outside servers, each answered,
plus one runaway host), the rest TCP/443, UDP/443 (QUIC) and DNS between 20,000
internal and random outside addresses, with mixed payload sizes.

Then times, each on the same file (or the first part of it, extrapolated, where a
peer is too slow to wait for; the table says so):

* netmon pcap read: the reader alone (records to Frames), with the compiled record walk and
  with the walk in Python that an install without a C compiler falls back to;
* netmon decode only: pcap reader + L2-L4 filter + NTP decode to observation rows;
* netmon decode + aggregation to per-host features (``netmon.aggregate.Aggregator``);
* netmon replay: the whole CLI pipeline (rules, embedded store) as a subprocess, run as an
  installed program runs (bytecode compiled once, see ``installed``); then again three times,
  alternating with tcpdump, for the whole-command ratio (best wall of each), with its CPU
  seconds, context switches and page faults;
* tcpdump ``-nr F udp port 123`` (BPF filter and one text line per NTP packet);
* tshark NTP dissection (``-Y ntp`` with fields out);
* dpkt and scapy: parse every frame, decode NTP on port 123, count per source host.

netmon runs single-threaded, so its packets/s are per core. Every tool's imports
happen before its clock starts. Run:

    .venv/bin/python tests/benchmarks/bench_replay.py [--packets N] [--keep capture.pcap]
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpkt
import numpy as np
from scapy.layers.inet import IP
from scapy.layers.ntp import NTP
from scapy.utils import PcapReader

from netmon import registry
from netmon.aggregate import Aggregator
from netmon.batch import Frames, HostIntervals, empty_observations
from netmon.commands.replay import replay_settings
from netmon.config import Aggregate, Campus
from netmon.decode.encode import frames_from_observations
from netmon.decode.frames import decode_frames
from netmon.detect.engine import Engine
from netmon.sources import pcapfile
from netmon.sources.netflow.incapture import ExportRouter
from netmon.sources.pcapfile import read_frames, write_pcap
from ratios import record

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NTP_EPOCH = 2_208_988_800


def _ipv4(values: np.ndarray) -> np.ndarray:
    return np.uint64(0xFFFF_0000_0000) | values.astype(np.uint64)


def _ntp_rows(n: int, hosts: int, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Client requests and their replies: ``n`` rows in all; 5 % of requests from one runaway host
    (10.9.0.9: ntpd daemons sharing port 123, all asking one server at poll 6)."""
    requests = n // 2
    rows = empty_observations(2 * requests)
    q, r = rows[:requests], rows[requests:]
    client = (10 << 24) + (1 << 16) + rng.integers(0, hosts, requests)
    runaway = rng.random(requests) < 0.05
    client[runaway] = (10 << 24) + (9 << 16) + 9  # many daemons on one host, all asking one server
    server = (203 << 24) + (0 << 16) + (113 << 8) + np.where(runaway, 1, rng.integers(1, 41, requests))
    when = T0 + np.sort(rng.random(requests)) * duration
    ntp_now = ((when + NTP_EPOCH) * 2**32).astype(np.uint64)
    q["time"], q["src_lo"], q["dst_lo"] = when, _ipv4(client), _ipv4(server)
    q["sport"], q["dport"] = np.where(runaway, 123, rng.integers(32768, 61000, requests)), 123  # ntpd shares port 123
    q["version"], q["mode"], q["poll"], q["precision"] = 4, 3, np.where(runaway, 6, rng.integers(6, 11, requests)), -20
    q["xmt_ts"], q["org_ts"] = ntp_now, ntp_now - np.uint64(64 << 32)
    r["time"], r["src_lo"], r["dst_lo"] = when + 0.02, q["dst_lo"], q["src_lo"]
    r["sport"], r["dport"] = 123, q["sport"]
    r["version"], r["mode"], r["stratum"], r["poll"], r["precision"] = 4, 4, 2, q["poll"], -23
    r["ref_id"], r["org_ts"] = 0xC0000201, ntp_now
    r["rec_ts"], r["xmt_ts"] = ntp_now + np.uint64(2**26), ntp_now + np.uint64(2**26 + 1000)
    return rows


def _background_rows(n: int, duration: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Other campus traffic: TCP/443, QUIC, DNS; (rows, IP protocol per row)."""
    rows = empty_observations(n)
    inside = _ipv4((10 << 24) + rng.integers(0, 1 << 16, n))
    outside = _ipv4(rng.integers(1 << 24, 223 << 24, n))
    out = rng.random(n) < 0.5
    rows["time"] = T0 + rng.random(n) * duration
    rows["src_lo"], rows["dst_lo"] = np.where(out, inside, outside), np.where(out, outside, inside)
    kind = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    service = np.array([443, 443, 53])[kind]
    ephemeral = rng.integers(32768, 61000, n)
    rows["sport"], rows["dport"] = np.where(out, ephemeral, service), np.where(out, service, ephemeral)
    rows["ntp_len"] = rng.choice([1, 32, 100, 500, 1200], n, p=[0.35, 0.2, 0.2, 0.15, 0.1])
    return rows, np.where(kind == 0, 6, 17)


def build_capture(path: Path, packets: int, ntp_share: float, hosts: int, seed: int = 7) -> Frames:
    """Write the campus-egress capture and return its frames (in time order)."""
    rng = np.random.default_rng(seed)
    duration = 3600.0
    ntp = _ntp_rows(int(packets * ntp_share), hosts, duration, rng)
    other, protocol = _background_rows(packets - len(ntp), duration, rng)
    rows = np.concatenate([ntp, other])
    protocol = np.concatenate([np.full(len(ntp), 17), protocol])
    order = np.argsort(rows["time"], kind="stable")
    frames = frames_from_observations(rows[order], protocol=protocol[order])
    write_pcap(path, frames)
    return frames


def subset(frames: Frames, n: int, path: Path) -> Path:
    """The first ``n`` frames as their own capture file (for the slow peers)."""
    head = Frames(*(getattr(frames, f)[:n] if f != "data" else frames.data for f in
                    ("data", "offset", "caplen", "wirelen", "time", "linktype", "weight")))
    write_pcap(path, head)
    return path


class Timer:
    """Wall and CPU seconds of a block (CPU includes child processes)."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, self._cpu() - self.cpu

    @staticmethod
    def _cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def netmon_read(path: Path) -> int:
    return sum(len(frames) for frames in read_frames(path))


def netmon_read_python_walk(path: Path) -> int:
    """The read with the walk netmon falls back to where the install had no C compiler."""
    compiled, pcapfile._compiled_walk = pcapfile._compiled_walk, None
    try:
        return netmon_read(path)
    finally:
        pcapfile._compiled_walk = compiled


def netmon_decode(path: Path) -> int:
    return sum(len(decode_frames(frames)) for frames in read_frames(path))


def netmon_aggregate(path: Path) -> int:
    aggregator = Aggregator(Campus(internal=["10.0.0.0/8"]), Aggregate())
    intervals = 0
    for frames in read_frames(path):
        intervals += sum(len(i) for i in aggregator.add(decode_frames(frames)))
    return intervals + sum(len(i) for i in aggregator.flush())


def installed(workdir: Path) -> dict[str, str]:
    """The environment of netmon's processes here: an installed program's, whose bytecode was compiled
    once (pip compiles it at install). A checkout may run with the bytecode cache off
    (PYTHONDONTWRITEBYTECODE), which recompiles every netmon module at every start (~0.05-0.07 s), so
    the benchmark keeps a cache of its own in its work directory, written by a first, untimed run."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def replay_command(path: Path, workdir: Path, run: int = 0) -> list[str]:
    """``netmon replay`` of ``path`` into a fresh store, findings to ``findings.json``."""
    return [sys.executable, "-m", "netmon", "replay", str(path), "--internal", "10.0.0.0/8",
            "--db", str(workdir / f"bench{run}.db"), "--findings-json", str(workdir / "findings.json")]


def netmon_replay(path: Path, workdir: Path) -> int:
    subprocess.run(replay_command(path, workdir), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=workdir, env=installed(workdir))
    return sum(1 for _ in open(workdir / "findings.json"))


@dataclass
class Usage:
    """One process run: wall and CPU seconds, context switches (voluntary + forced), minor page faults."""

    wall: float
    cpu: float
    switches: int
    faults: int


def usage(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Usage:
    """Run ``command`` (output discarded) and measure it from its parent (children's rusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Usage(wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                 after.ru_nvcsw + after.ru_nivcsw - before.ru_nvcsw - before.ru_nivcsw, after.ru_minflt - before.ru_minflt)


def whole_command(path: Path, workdir: Path, runs: int = 3) -> tuple[list[Usage], list[Usage]]:
    """``netmon replay`` and tcpdump on ``path``, alternating, ``runs`` times each (a load that comes
    and goes hits both alike)."""
    ours, peer = [], []
    for run in range(runs):
        ours.append(usage(replay_command(path, workdir, run), installed(workdir), workdir))
        peer.append(usage(["tcpdump", "-nr", str(path), "udp port 123"]))
    return ours, peer


def stage_costs(path: Path, workdir: Path) -> dict[str, float]:
    """CPU seconds of each stage of ``netmon replay`` on ``path``, run one after another in this
    thread (the command runs them in its source, pipeline and sink threads): where the whole
    command's time goes, to work on the biggest part first."""
    costs = dict.fromkeys(("pcap read", "decode (exports + NTP)", "aggregate", "detect (every detector)",
                           "embedded store"), 0.0)
    settings = replay_settings((str(path),), None, ("10.0.0.0/8",), None, str(workdir / "stages.db"))
    exports = ExportRouter(settings.sources[0].netflow_ports, settings.sources[0].sflow_ports)
    aggregator, engine = Aggregator(settings.campus, settings.aggregate), Engine(settings.detect)
    store = registry.plugin("sink", "store").build(settings.sinks[0], settings)

    def timed(stage: str, work: Callable[[], Any]) -> Any:
        began = time.thread_time()
        out = work()
        costs[stage] += time.thread_time() - began
        return out

    def deliver(closed: list[HostIntervals]) -> None:
        for intervals in closed:
            scored = timed("detect (every detector)", lambda i=intervals: engine.process(i))
            timed("embedded store", lambda s=scored: store.write(s))

    batches = read_frames(path)
    while (frames := timed("pcap read", lambda: next(batches, None))) is not None:
        rows = timed("decode (exports + NTP)", lambda f=frames: (list(exports.route(f)), decode_frames(f))[1])
        newest = timed("aggregate", lambda r=rows: aggregator.insert(r))
        if newest is not None:
            deliver(timed("aggregate", lambda n=newest: aggregator.advance(n - aggregator.lateness)))
    deliver(timed("aggregate", aggregator.flush))
    timed("embedded store", store.close)
    return costs


#: What ``netmon replay`` imports before its first packet: the CLI, the pipeline, the config and
#: the plug-ins it names (the pcap source, the embedded store). river (and scipy) come later, with
#: the population detector's first model, which the benchmark's one-hour capture is too short to
#: make (hosts must be known 2 h).
STARTUP = ("import netmon.cli, netmon.pipeline, netmon.commands.replay, netmon.sources.pcap, netmon.sinks.store; "
           "from netmon.config import load; load(None)")


def best_wall(command: list[str], runs: int = 3, env: dict[str, str] | None = None) -> float:
    """Best wall seconds of ``runs`` runs of ``command`` (its output discarded)."""
    return min(usage(command, env).wall for _ in range(runs))


def tcpdump(path: Path) -> int:
    out = subprocess.run(["tcpdump", "-nr", str(path), "udp port 123"], check=True, capture_output=True).stdout
    return out.count(b"\n")


def tshark(path: Path) -> int:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "ntp", "-T", "fields", "-e", "ip.src", "-e", "ntp.flags.mode",
                          "-e", "ntp.xmt"], check=True, capture_output=True).stdout
    return out.count(b"\n")


def dpkt_count(path: Path) -> int:
    per_host: collections.Counter[bytes] = collections.Counter()
    with open(path, "rb") as handle:
        for _, buf in dpkt.pcap.Reader(handle):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.udp.UDP) and 123 in (ip.data.sport, ip.data.dport):
                ntp = dpkt.ntp.NTP(ip.data.data)
                per_host[ip.src] += ntp.mode > 0
    return sum(per_host.values())


def scapy_count(path: Path) -> int:
    per_host: collections.Counter[str] = collections.Counter()
    for packet in PcapReader(str(path)):
        if packet.haslayer(NTP):
            per_host[packet[IP].src] += 1
    return sum(per_host.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--ntp-share", type=float, default=0.04)
    parser.add_argument("--hosts", type=int, default=3000)
    parser.add_argument("--tshark-packets", type=int, default=100_000)
    parser.add_argument("--dpkt-packets", type=int, default=200_000)
    parser.add_argument("--scapy-packets", type=int, default=20_000)
    parser.add_argument("--no-replay", action="store_true", help="skip the whole-pipeline CLI run")
    parser.add_argument("--keep", type=Path, help="also keep the capture at this path")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="netmon-bench-"))
    try:
        path = workdir / "campus.pcap"
        with Timer() as made:
            frames = build_capture(path, args.packets, args.ntp_share, args.hosts)
        size = path.stat().st_size
        print(f"capture: {args.packets:,} frames, {args.ntp_share:.0%} NTP, {args.hosts:,} NTP hosts, "
              f"{size / 1e6:.0f} MB, built in {made.wall:.1f} s ({args.packets / made.wall / 1e6:.2f} M frames/s encode+write)")
        path.read_bytes()  # warm the page cache so every tool reads from memory
        if args.keep:
            shutil.copy(path, args.keep)

        runs: list[tuple[str, Callable[[Path], int], int, str]] = [
            ("netmon pcap read (compiled walk)", netmon_read, args.packets, "frames"),
            ("netmon pcap read (Python walk)", netmon_read_python_walk, args.packets, "frames"),
            ("netmon decode only", netmon_decode, args.packets, "NTP rows"),
            ("netmon decode + aggregate", netmon_aggregate, args.packets, "host-intervals"),
        ]
        if not args.no_replay:
            runs.append(("netmon replay (CLI, all stages)", lambda p: netmon_replay(p, workdir), args.packets, "findings"))
        runs.append(("tcpdump -nr F udp port 123", tcpdump, args.packets, "lines"))
        runs += [
            ("tshark -Y ntp (fields)", tshark, args.tshark_packets, "lines"),
            ("dpkt (parse + NTP + per host)", dpkt_count, args.dpkt_packets, "NTP packets"),
            ("scapy (PcapReader + NTP layer)", scapy_count, args.scapy_packets, "NTP packets"),
        ]
        results: dict[str, float] = {}
        walls: dict[str, float] = {}
        print(f"\n{'tool':36} {'frames':>10} {'wall s':>8} {'cpu s':>8} {'frames/s':>11} {'frames/cpu-s':>13}  output")
        for name, run, count, unit in runs:
            if name.split()[0] in ("tcpdump", "tshark") and shutil.which(name.split()[0]) is None:
                print(f"{name:36} not installed")
                continue
            target = path if count >= args.packets else subset(frames, count, workdir / f"first-{count}.pcap")
            with Timer() as took:
                produced = run(target)
            rate = count / max(took.cpu, 1e-9)
            results[name] = rate
            if count >= args.packets:
                walls[name] = took.wall
            note = "" if count >= args.packets else f"  (first {count:,} frames, rate extrapolated)"
            print(f"{name:36} {count:>10,} {took.wall:>8.2f} {took.cpu:>8.2f} {count / took.wall:>11,.0f} {rate:>13,.0f}"
                  f"  {produced:,} {unit}{note}")

        print("\nRates per CPU-second (user + system, children included) are per-core figures and hold up on a")
        print(f"shared machine; wall-clock rates depend on the load (load average now {os.getloadavg()[0]:.1f}).")
        for ours_name in ("netmon decode only", "netmon decode + aggregate"):
            if ours_name not in results:
                continue
            ours = results[ours_name]
            print(f"\n{ours_name}: {ours / 1e6:.2f} M frames per CPU-second "
                  f"({'meets' if ours >= 1e6 else 'misses'} the 1 M frames/s per core target); ratio to each peer:")
            for name, rate in results.items():
                if not name.startswith("netmon"):
                    print(f"  {ours / rate:8.2f} x {name}")
                    record("replay", f"{ours_name}, frames per CPU-second", ours, "frames/s", "higher", name, rate)
        env = installed(workdir)
        if not args.no_replay and shutil.which("tcpdump"):
            peer = "tcpdump -nr F udp port 123"
            ours, theirs = whole_command(path, workdir)
            best, best_peer = min(ours, key=lambda u: u.wall), min(theirs, key=lambda u: u.wall)
            print(f"\nwhole command, process start included, alternating with tcpdump (best of {len(ours)} wall): "
                  f"netmon replay {best.wall:.2f} s, tcpdump {best_peer.wall:.2f} s ({best.wall / best_peer.wall:.2f}x)")
            for name, runs in (("netmon replay", ours), ("tcpdump", theirs)):
                print(f"  {name:14} " + "; ".join(f"{u.wall:.2f} s wall {u.cpu:.2f} CPU-s {u.switches:,} context switches "
                                                  f"{u.faults:,} page faults" for u in runs))
            record("replay", f"whole command wall time, {args.packets:,} frames", best.wall, "s", "lower", peer,
                   best_peer.wall, "<= 1.0")
            record("replay", f"whole command CPU seconds, {args.packets:,} frames", min(u.cpu for u in ours), "s", "lower",
                   peer, min(u.cpu for u in theirs))
            floor = best_wall([sys.executable, "-c", STARTUP], env=env)  # process start and replay's imports
            compiling = best_wall([sys.executable, "-c", STARTUP])  # as this environment runs it
            print(f"  of which process start and imports (best of 3): {floor:.2f} s ({compiling:.2f} s with this "
                  f"environment's bytecode cache{' off' if os.environ.get('PYTHONDONTWRITEBYTECODE') else ''}); "
                  f"the replay itself {best.wall - floor:.2f} s")
            record("replay", "process start and imports of the whole command (best of 3)", floor, "s", "lower", peer,
                   best_peer.wall)
            print("  its stages, one after another in one thread (CPU s):")
            for stage, cpu in stage_costs(path, workdir).items():
                print(f"    {stage:28} {cpu:6.3f}")
        helps = best_wall([str(Path(sys.executable).with_name("netmon")), "--help"], env=env)
        print(f"netmon --help: {helps:.2f} s (best of 3)")
        record("replay", "netmon --help wall time (best of 3)", helps, "s", "lower", bar="<= 0.3")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
