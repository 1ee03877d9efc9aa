"""Flow decoding speed: netmon beside nfcapd and the ``netflow`` PyPI package, printed as ratios.

    .venv/bin/python tests/benchmarks/bench_flows.py [--datagrams 20000] [--repeat 6] [--no-loopback]

1. In process, one core: records/s that netmon decodes (and aggregates the UDP/123
   ones) for NetFlow v5, v9 and IPFIX with fixed templates, against the ``netflow``
   package decoding the same datagrams.
2. On loopback: the same stream sent as fast as one sender process can to nfcapd and to
   netmon's netflow source, run back to back; records/s received, the loss at that rate
   and records per CPU-second of the receiving processes (nfcapd's records are counted
   by ``nfdump -I`` afterwards, so its rate is at most the sender's). CPU is read from
   /proc in clock ticks (10 ms): ``--repeat`` keeps each run long enough to read.
3. On loopback, paced: the stream at ``--rate`` records/s (1 M by default) for
   ``--seconds``; the loss netmon's source has at that rate.

The load average is printed before and after: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import multiprocessing
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from netmon import health  # noqa: E402
from netmon.aggregate import Aggregator  # noqa: E402
from netmon.config import Aggregate, Campus, plugin_config  # noqa: E402
from netmon.sources.netflow.collector import Collector  # noqa: E402
from netmon.sources.netflow.source import NetflowSource  # noqa: E402
from ratios import record  # noqa: E402

EXPORT = int(time.time())  # live exports are dated about now (older ones are clamped to arrival)
#: IPFIX/v9 fields: src, dst, sport, dport, proto, tos, flags, in/out if, packets, bytes, start/end uptime or ms.
V9_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (5, 1), (6, 1), (10, 4), (14, 4), (2, 4), (1, 4), (22, 4), (21, 4)]
IPFIX_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (5, 1), (6, 1), (10, 4), (14, 4), (2, 8), (1, 8), (152, 8), (153, 8)]


def _records(n: int, rng: np.random.Generator, fields: list[tuple[int, int]], share: float) -> list[bytes]:
    out = []
    for _ in range(n):
        ntp = rng.random() < share
        src = ipaddress.IPv4Address(int(0x0A000000 + rng.integers(1, 5000))).packed
        dst = ipaddress.IPv4Address(int(0xC0000200 + rng.integers(1, 50))).packed
        sport, dport = (int(rng.integers(1024, 65535)), 123) if ntp else (443, int(rng.integers(1024, 65535)))
        values = {8: src, 12: dst, 7: sport, 11: dport, 4: 17 if ntp else 6, 5: 0, 6: 0, 10: 1, 14: 2, 2: 1, 1: 76,
                  22: 990_000, 21: 999_000, 152: (EXPORT - 10) * 1000, 153: (EXPORT - 1) * 1000}
        rec = b""
        for ie, length in fields:
            value = values[ie]
            rec += value if isinstance(value, bytes) else value.to_bytes(length, "big")
        out.append(rec)
    return out


def v5_stream(count: int, rng: np.random.Generator, share: float) -> list[bytes]:
    per = 30
    body = []
    for i in range(count):
        recs = b""
        for _ in range(per):
            ntp = rng.random() < share
            recs += struct.pack("!4s4s4sHHIIIIHHBBBBHHBBH", ipaddress.IPv4Address(int(0x0A000000 + rng.integers(1, 5000))).packed,
                                ipaddress.IPv4Address(int(0xC0000200 + rng.integers(1, 50))).packed, b"\0" * 4, 1, 2, 1, 76,
                                990_000, 999_000, int(rng.integers(1024, 65535)), 123 if ntp else 443, 0, 0, 17 if ntp else 6, 0, 0, 0, 0, 0, 0)
        body.append(struct.pack("!HHIIIIBBH", 5, per, 1_000_000, EXPORT, 0, i * per, 0, 0, 0) + recs)
    return body


def _template_stream(version: int, count: int, rng: np.random.Generator, share: float) -> list[bytes]:
    fields = IPFIX_FIELDS if version == 10 else V9_FIELDS
    reclen = sum(length for _, length in fields)
    per = (1400 - 24) // reclen
    template = struct.pack("!HH", 256, len(fields)) + b"".join(struct.pack("!HH", ie, ln) for ie, ln in fields)
    template_set = struct.pack("!HH", 2 if version == 10 else 0, 4 + len(template)) + template
    pool = _records(per * 50, rng, fields, share)
    out = []
    for i in range(count):
        recs = b"".join(pool[(i * per + k) % len(pool)] for k in range(per))
        sets = (template_set if i % 100 == 0 else b"") + struct.pack("!HH", 256, 4 + len(recs)) + recs
        if version == 10:
            out.append(struct.pack("!HHIII", 10, 16 + len(sets), EXPORT, i * per, 1) + sets)
        else:
            out.append(struct.pack("!HHIIII", 9, per, 1_000_000, EXPORT, i, 1) + sets)
    return out


def streams(count: int, share: float = 0.5) -> dict[str, list[bytes]]:
    """Export datagrams per version; ``share`` of the records are UDP/123."""
    rng = np.random.default_rng(1)
    return {"v5": v5_stream(count, rng, share), "v9": _template_stream(9, count, rng, share), "ipfix": _template_stream(10, count, rng, share)}


def netmon_rate(datagrams: list[bytes], batch: int = 2000) -> tuple[float, float, int]:
    """(records/s decoded to UDP/123 observations, records/s with those aggregated per host too, records)."""
    health.reset()
    collector = Collector(ntp_only=True)
    aggregator = Aggregator(Campus(internal=["10.0.0.0/8"]), Aggregate(interval=60))
    decoding = aggregating = 0.0
    for lo in range(0, len(datagrams), batch):
        start = time.perf_counter()
        part = datagrams[lo : lo + batch]
        collector.feed_batch(part, ["192.0.2.1"] * len(part))
        rows = collector.flush().observations
        middle = time.perf_counter()
        aggregator.add(rows)
        decoding += middle - start
        aggregating += time.perf_counter() - middle
    records = int(health.snapshot().get("source.netflow.records", 0))
    start = time.perf_counter()
    aggregator.flush()
    aggregating += time.perf_counter() - start
    return records / decoding, records / (decoding + aggregating), records


def netflow_package_rate(datagrams: list[bytes], limit: int = 3000) -> float | None:
    """Records/s of the ``netflow`` PyPI package on the same datagrams (a prefix; it is slow)."""
    try:
        import netflow
    except ImportError:
        return None
    templates: dict = {"netflow": {}, "ipfix": {}}
    records = 0
    start = time.perf_counter()
    for data in datagrams[:limit]:
        try:
            records += len(netflow.parse_packet(data, templates).flows)
        except Exception:  # noqa: BLE001 - a peer's failure is its result
            continue
    return records / (time.perf_counter() - start)


def _send(datagrams: list[bytes], port: int, repeat: int, per_second: float = 0.0) -> None:
    """Send the datagrams ``repeat`` times; with ``per_second``, no faster than that many datagrams a second
    (checked every 64 datagrams, so the pace holds on average over about a millisecond)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    start, sent = time.perf_counter(), 0
    for _ in range(repeat):
        for data in datagrams:
            sock.sendto(data, ("127.0.0.1", port))
            sent += 1
            if per_second and sent % 64 == 0:
                ahead = sent / per_second - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)


def _send_timed(datagrams: list[bytes], port: int, repeat: int, per_second: float = 0.0) -> float:
    proc = multiprocessing.Process(target=_send, args=(datagrams, port, repeat, per_second))
    start = time.perf_counter()
    proc.start()
    proc.join()
    return time.perf_counter() - start


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loopback_netmon(datagrams: list[bytes], repeat: int, per_second: float = 0.0) -> tuple[float, float, float]:
    """(records/s received and decoded, datagram loss fraction, records per CPU-second) for netmon's
    netflow source; CPU is the collector's process (decoding, the reader thread) plus its receiver process.
    ``per_second``: datagrams a second the sender keeps to (0: as fast as it can)."""
    config = plugin_config("source", {"type": "netflow", "listen": ["127.0.0.1:0"], "batch_seconds": 0.05})
    source = NetflowSource(config)
    health.reset()
    done = threading.Event()

    def consume() -> None:
        for _ in source.batches():
            if done.is_set():
                break

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    receiver = source.listener._pump.pid
    cpu = time.process_time() + _cpu_seconds(receiver)
    start = time.perf_counter()
    _send_timed(datagrams, source.listener.ports[0], repeat, per_second)
    sent = len(datagrams) * repeat
    seen, last = -1.0, time.perf_counter()
    while time.perf_counter() - last < 3.0:  # until 3 s pass with no progress (a batch may take a second)
        now = health.snapshot().get("source.netflow.datagrams", 0)
        if now != seen:
            seen, last = now, time.perf_counter()
        time.sleep(0.02)
    elapsed = last - start
    cpu = time.process_time() + _cpu_seconds(receiver) - cpu
    done.set()
    source.close()
    thread.join(timeout=2)
    got = health.snapshot()
    records = got.get("source.netflow.records", 0)
    return records / elapsed, 1 - got.get("source.netflow.datagrams", 0) / sent, records / max(cpu, 1e-9)


def loopback_nfcapd(datagrams: list[bytes], repeat: int, expected: int) -> tuple[float, float, float] | None:
    """(records/s, datagram loss, records per CPU-second) for nfcapd receiving the same stream; counted by
    nfdump afterwards."""
    if shutil.which("nfcapd") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = subprocess.Popen(["nfcapd", "-w", tmp, "-b", "127.0.0.1", "-p", str(port), "-t", "3600", "-B", str(8 << 20)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        try:
            cpu = _cpu_seconds(proc.pid)
            elapsed = _send_timed(datagrams, port, repeat)
            time.sleep(1.0)
            cpu = _cpu_seconds(proc.pid) - cpu
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        out = subprocess.run(["nfdump", "-R", tmp, "-I"], capture_output=True, text=True).stdout
        flows = next((int(line.split(":")[1]) for line in out.splitlines() if line.startswith("Flows:")), 0)
    return flows / elapsed, 1 - flows / expected, flows / max(cpu, 1e-9)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datagrams", type=int, default=20000, help="datagrams per version")
    parser.add_argument("--no-loopback", action="store_true", help="only the in-process decode rates")
    parser.add_argument("--ntp-share", type=float, default=0.5, help="fraction of records that are UDP/123 (a campus edge: ~0.01)")
    parser.add_argument("--repeat", type=int, default=6, help="times the loopback sample (up to 5000 datagrams) is sent")
    parser.add_argument("--rate", type=float, default=1e6, help="records/s of the paced loopback run (0: skip it)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the paced loopback run")
    args = parser.parse_args()
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    data = streams(args.datagrams, args.ntp_share)
    gc.freeze()  # the generated streams are long-lived: keep the collector's GC passes from rescanning them
    print(f"{'version':8} {'netmon decode':>14} {'+aggregate':>12} {'netflow pkg':>12} {'ratio':>7}   (records/s, one core)")
    for name, datagrams in data.items():
        decode, total, records = netmon_rate(datagrams)
        peer = netflow_package_rate(datagrams)
        ratio = f"{decode / peer:7.1f}" if peer else "    n/a"
        print(f"{name:8} {decode:14,.0f} {total:12,.0f} {peer or 0:12,.0f} {ratio}   ({records:,} records)")
        if peer:
            record("flows", f"{name} decode, records/s (one core)", decode, "records/s", "higher", "netflow package", peer)
        record("flows", f"{name} decode + aggregate, {args.ntp_share:.0%} NTP records", total, "records/s", "higher",
               bar=">= 1000000")
    if args.no_loopback:
        return
    print(f"\nloopback, one sender process: {'netmon rec/s':>14} {'loss':>7} {'rec/CPU-s':>11} "
          f"{'nfcapd rec/s':>14} {'loss':>7} {'rec/CPU-s':>11} {'CPU ratio':>9}")
    samples = {name: datagrams[:5000] for name, datagrams in data.items()}
    records = {name: netmon_rate(sample)[2] for name, sample in samples.items()}  # records each sample holds
    for name, sample in samples.items():
        ours, loss, per_cpu = loopback_netmon(sample, args.repeat)
        peer = loopback_nfcapd(sample, args.repeat, args.repeat * records[name])
        if peer is None:
            print(f"{name:8} {ours:14,.0f} {loss:7.1%} {per_cpu:11,.0f}   nfcapd not installed")
        else:
            print(f"{name:8} {'':21} {ours:14,.0f} {loss:7.1%} {per_cpu:11,.0f} {peer[0]:14,.0f} {peer[1]:7.1%} {peer[2]:11,.0f}"
                  f" {per_cpu / max(peer[2], 1):9.2f}")
            record("flows", f"{name} on loopback, records per CPU-second", per_cpu, "records/s", "higher", "nfcapd",
                   peer[2], ">= 1.0")
        record("flows", f"{name} on loopback, records lost", loss, "fraction", "lower", bar="<= 0")
    if args.rate:
        print(f"\nloopback, paced at {args.rate:,.0f} records/s for {args.seconds:g} s: {'netmon rec/s':>14} {'loss':>7} {'rec/CPU-s':>11}")
        for name, sample in samples.items():
            per_datagram = records[name] / len(sample)
            repeat = max(1, round(args.rate * args.seconds / per_datagram / len(sample)))
            ours, loss, per_cpu = loopback_netmon(sample, repeat, args.rate / per_datagram)
            print(f"{name:8} {'':53} {ours:14,.0f} {loss:7.1%} {per_cpu:11,.0f}")
            record("flows", f"{name} on loopback at {args.rate:,.0f} records/s, records lost", loss, "fraction", "lower",
                   bar="<= 0")
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
