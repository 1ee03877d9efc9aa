"""Collectors and scorers over NATS JetStream: observations/s per core, and 1 -> 2 -> 4 scorers.

Starts its own nats-server (JetStream, loopback, a temporary store) and measures:

* collector: observations/s published per collector CPU second (partition by host
  hash, encode, publish with acks) on N simulated hosts, beside the CPU of decoding
  the same number of observations from frames (the sample capture, repeated): the
  transport's share of a collector's CPU per observation (bar: <= 30 %), in ``--rounds``
  turns of publish then decode (a shared machine's load shifts: the median is judged);
* scorers: the stream filled once, then 1, 2 and 4 ``netmon run --role scorer``
  processes consume it (each run its own stream prefix): wall time until every
  message is delivered and the scorers are idle again (start-up included), and each
  process's CPU until then. On a 2-core machine
  the speed-up is capped by the cores: read CPU per process beside wall time.

    .venv/bin/python tests/benchmarks/bench_cluster.py [--hosts 1000000] [--rows 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from netmon.batch import OBS_DTYPE  # noqa: E402
from netmon.cluster.collector import Outbox  # noqa: E402
from netmon.config import validate  # noqa: E402
from netmon.decode.frames import decode_with_index  # noqa: E402
from netmon.sources import pcap  # noqa: E402
from netmon.transport import jetstream  # noqa: E402
from ratios import record  # noqa: E402
from tests.support.lab import wait_for  # noqa: E402
from tests.support.nats import NatsServer  # noqa: E402

SAMPLE = REPO / "deploy" / "samples" / "campus-runaway.pcap.gz"
BATCH = 50_000


def observations(hosts: int, rows: int, seconds: float, seed: int = 7) -> np.ndarray:
    """``rows`` client requests from ``hosts`` campus hosts (10.0.0.0/8) to 8 servers over ``seconds``."""
    rng = np.random.default_rng(seed)
    out = np.zeros(rows, OBS_DTYPE)
    out["time"] = 1.7e9 + np.sort(rng.uniform(0, seconds, rows))
    out["src_lo"] = (0xFFFF << 32) | (0x0A000000 + rng.integers(1, hosts + 1, rows)).astype(np.uint64)
    out["dst_lo"] = (0xFFFF << 32) | (0xC0000200 + rng.integers(1, 9, rows)).astype(np.uint64)
    out["sport"] = rng.integers(1024, 65535, rows)
    out["dport"] = 123
    out["packets"], out["bytes"], out["ntp"], out["version"], out["mode"], out["poll"] = 1, 76, 1, 4, 3, 6
    out["ntp_len"] = 48
    return out


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def decode_cost(rows: int) -> float:
    """CPU seconds per observation of decoding frames (the sample capture) into rows."""
    source = pcap.build(pcap.Config(type="pcap", paths=[str(SAMPLE)]), None)
    frames = [item for item in source.batches() if hasattr(item, "caplen")]
    seen, spent = 0, 0.0
    while seen < rows:
        for batch in frames:
            start = cpu()
            decoded, _ = decode_with_index(batch)
            spent += cpu() - start
            seen += decoded.shape[0]
    return spent / seen


#: Bytes each stream may hold (8 M rows). Every run's stream reserves it on the server's disk, and
#: JetStream offers all streams together 3/4 of the free disk: 8 GiB each failed the sixth stream.
STREAM_BYTES = 2 << 30


def settings(nats: NatsServer, prefix: str, partitions: int, extra: dict | None = None):
    return validate({"campus": {"internal": ["10.0.0.0/8"]}, "aggregate": {"lateness": 2},
                     "detect": {"detectors": ["rules"], "checkpoint": ""},
                     "cluster": {"urls": [nats.url], "prefix": prefix, "partitions": partitions,
                                 "max_bytes": STREAM_BYTES, "node_id": "bench-collector", "collectors": ["bench-collector"],
                                 "lease_timeout": 6.0, "checkpoint_every": 30.0, **(extra or {})}})


def publish(nats: NatsServer, prefix: str, partitions: int, data: np.ndarray) -> tuple[float, float]:
    """Publish ``data`` as one collector; (wall s, CPU s) of the transport part."""
    config = settings(nats, prefix, partitions)
    stop = threading.Event()
    link = jetstream.Link(config.cluster, "bench-collector", stop)
    try:
        jetstream.ensure(link)
        outbox = Outbox(config, jetstream.Publisher(link).send, "bench-collector")
        wall, spent = time.perf_counter(), cpu()
        for start in range(0, data.shape[0], BATCH):
            newest = outbox.insert(data[start:start + BATCH])
            outbox.advance(newest - 2.0)
        outbox.flush()
        return time.perf_counter() - wall, cpu() - spent
    finally:
        link.close()


def one_process(config, data: np.ndarray) -> float:
    """CPU seconds of aggregate + detect on ``data`` in this process (no transport): the baseline."""
    from netmon.aggregate import Aggregator
    from netmon.detect.engine import Engine

    aggregator, engine = Aggregator(config.campus, config.aggregate), Engine(config.detect, restore=False)
    spent = cpu()
    for start in range(0, data.shape[0], BATCH):
        for intervals in aggregator.add(data[start:start + BATCH]):
            engine.process(intervals)
    for intervals in aggregator.flush():
        engine.process(intervals)
    return cpu() - spent


def pending(nats: NatsServer, prefix: str) -> int:
    """Messages of the stream not yet delivered to any scorer (all partitions' consumers)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{nats.monitor}/jsz?consumers=true", timeout=5) as reply:
        info = json.load(reply)
    consumers = [c for a in info.get("account_details", []) for s in a.get("stream_detail", [])
                 if s["name"] == f"{prefix}-obs" for c in s.get("consumer_detail", [])]
    return sum(c["num_pending"] for c in consumers) if consumers else -1


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def score(nats: NatsServer, prefix: str, partitions: int, scorers: int, tmp: Path,
          bare: bool) -> tuple[float, list[float]]:
    """Wall seconds for ``scorers`` processes to consume and score the stream (every message
    delivered and the processes idle again), and each one's CPU seconds until then; ``bare``:
    no sink (transport, aggregate and detect only), else the embedded store."""
    procs = []
    for i in range(scorers):
        config = tmp / f"{prefix}-s{i}.toml"
        sinks = [] if bare else ["[[sinks]]", 'type = "store"', f'path = "{tmp / f"{prefix}-s{i}.db"}"']
        config.write_text("\n".join([
            "sinks = []" if bare else "", "[campus]", 'internal = ["10.0.0.0/8"]', "[detect]", 'detectors = ["rules"]', 'checkpoint = ""',
            "[logging]", 'level = "warning"', "[cluster]", f'urls = ["{nats.url}"]', f'prefix = "{prefix}"',
            f"partitions = {partitions}", 'collectors = ["bench-collector"]', "lease_timeout = 6.0",
            "checkpoint_every = 30.0", f'node_id = "scorer-{i}"', *sinks]) + "\n")
        procs.append(subprocess.Popen([sys.executable, "-m", "netmon", "run", "--role", "scorer", "--config",
                                       str(config)], stdout=subprocess.DEVNULL, stderr=(tmp / f"{prefix}-s{i}.log").open("wb")))
    start = time.perf_counter()
    try:
        if not wait_for(lambda: pending(nats, prefix) == 0, timeout=3600, interval=0.5):
            raise RuntimeError(f"{scorers} scorer(s) did not consume the stream; see {tmp}")
        before = [process_cpu(p.pid) for p in procs]
        while True:  # idle: under 0.1 CPU second each over the last second
            time.sleep(1.0)
            now = [process_cpu(p.pid) for p in procs]
            if all(b - a < 0.1 for a, b in zip(before, now)):
                return time.perf_counter() - start - 1.0, now
            before = now
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=2_000_000, help="observations published")
    parser.add_argument("--seconds", type=float, default=300.0, help="event time the observations span")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="collector rounds; the median share is judged")
    parser.add_argument("--scorers", default="1,2,4", help='scorer process counts to run ("" for none)')
    parser.add_argument("--store", action="store_true", help="scorers write the embedded store (default: no sink, "
                        "as the one-process baseline; bench_influx.py measures sinks)")
    args = parser.parse_args()
    data = observations(args.hosts, args.rows, args.seconds)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, NatsServer(Path(tmp) / "nats") as nats:
        publish(nats, "warm", args.partitions, data[:BATCH * 4])
        shares, rates = [], []
        for turn in range(args.rounds):  # publish then decode, in turns: both meet the same load on the machine
            wall, spent = publish(nats, f"bench{turn}", args.partitions, data)
            per_obs_decode = decode_cost(min(args.rows, 500_000))
            per_obs_transport = spent / args.rows
            shares.append(per_obs_transport / (per_obs_transport + per_obs_decode))
            rates.append(args.rows / spent)
            print(f"collector round {turn + 1}: {args.rows:,} observations of {args.hosts:,} hosts published in "
                  f"{wall:.1f} s wall, {spent:.1f} s CPU: {args.rows / spent:,.0f} obs/s per collector core "
                  f"({args.rows / wall:,.0f} obs/s wall); decode from frames {1 / per_obs_decode:,.0f} obs/s per core; "
                  f"transport share {shares[-1]:.0%} (load average {os.getloadavg()[0]:.1f})")
        share = statistics.median(shares)
        print(f"transport share of a collector's CPU per observation (decode + transport): median {share:.0%} of "
              f"{args.rounds} rounds ({min(shares):.0%}-{max(shares):.0%}); bar <= 30 %: "
              f"{'met' if share <= 0.30 else 'NOT met'}")
        record("cluster", "collector obs/s per core (publish)", statistics.median(rates), "obs/s", "higher")
        record("cluster", "transport share of collector CPU", 100 * share, "%", "lower", bar="<= 30 %")
        alone = one_process(settings(nats, "bench", args.partitions), data)
        print(f"one process, aggregate + detect (rules), no transport: {args.rows / alone:,.0f} obs/s per core")
        record("cluster", "one process aggregate+detect obs/s per core", args.rows / alone, "obs/s", "higher")
        for count in (int(n) for n in args.scorers.split(",") if n):
            prefix = f"s{count}"
            publish(nats, prefix, args.partitions, data)
            took, cpus = score(nats, prefix, args.partitions, count, Path(tmp), bare=not args.store)
            print(f"{count} scorer(s): drained {args.rows:,} observations in {took:.1f} s wall "
                  f"({args.rows / took:,.0f} obs/s); CPU per process {', '.join(f'{c:.1f}' for c in cpus)} s "
                  f"({args.rows / sum(cpus):,.0f} obs/s per scorer core)")
            record("cluster", f"{count} scorers obs/s wall", args.rows / took, "obs/s", "higher")
            record("cluster", f"{count} scorers obs/s per core", args.rows / sum(cpus), "obs/s", "higher")


if __name__ == "__main__":
    main()
