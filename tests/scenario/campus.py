"""A small campus of real NTP daemons in network namespaces, captured at the border.

    srv (ntpsec 198.51.100.1: orphan-mode server, ``restrict default limited kod``)
     |  198.51.100.0/24            <- tcpdump on the border's outside veth
    border (router, no NAT)
     |-- good-chrony  10.99.1.2   chronyd, one instance all along
     |-- good-ntpsec  10.99.2.2   ntpsec ntpd, one instance all along
     |-- runaway      10.99.3.2   chronyd instances accumulate, none ever stops
     |-- nat          10.99.4.2   nftables masquerade for chrony clients 172.16.<i>.2,
     |                            one namespace each; their number wanders around a level
     `-- restart      10.99.5.2   one chronyd, stopped by PID and started again (iburst)

Every chronyd keeps chrony's default ``acquisitionport 0``: each request leaves from a
new random source port, every instance honours KoD on its own, and requests carry a
zero origin and a random transmit timestamp. Each instance has its own config,
pidfile, drift file and command socket (chronyd refuses to share them).

Time is compressed: chronyd polls every 4 s (``minpoll 2 maxpoll 2``, iburst requests
2 s apart; a plan may choose another poll) instead of 64-1024 s; the ntpsec client keeps
its real 64 s. The server's ``limited kod`` (ntpsec's built-in limits) sends real KoD
RATE to a host once its summed rate nears one request per second: from about the 4th
chronyd polling every 4 s, the 8th polling every 8 s.

A ``Plan`` says what runs when; ``run_campus`` carries it out and returns the capture
and a ground-truth log of every daemon start and stop, with the number of instances
running on that host afterwards. ``python -m tests.scenario.campus OUTDIR`` records the
long plan for other work to replay (see ``record``).

Clock safety: chronyd runs with ``-x``, ntpsec with ``disable kernel`` and ``disable
ntp``, and every daemon is wrapped in ``no_clock_caps`` (no CAP_SYS_TIME). All
addresses live inside the namespaces the lab creates; nothing else is addressed.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from netmon.decode.frames import decode_frames
from netmon.sources.pcapfile import read_frames
from tests.support.lab import Lab, Namespace, can_make_namespaces, no_clock_caps, wait_for

NTPD = "/opt/netmon-test/ntpsec/usr/sbin/ntpd"
CHRONYD = shutil.which("chronyd") or "/usr/sbin/chronyd"
SERVER = "198.51.100.1"
GOOD_CHRONY, GOOD_NTPSEC, RUNAWAY, NAT, RESTART = "10.99.1.2", "10.99.2.2", "10.99.3.2", "10.99.4.2", "10.99.5.2"
HOSTS = {GOOD_CHRONY: "good-chrony", GOOD_NTPSEC: "good-ntpsec", RUNAWAY: "runaway", NAT: "nat", RESTART: "restart"}
RATE = int.from_bytes(b"RATE", "big")
#: chronyd's poll, log2 seconds (4 s), for every chrony client in the campus
CHRONY_POLL = 2


#: ntpsec 1.2 has no ``discard`` command (it is a syntax error there): ``limited`` uses
#: its built-in limits, which here sent the first KoD RATE once a source address
#: averaged about one request per second
SERVER_CONF = ("tos orphan 6 orphanwait 1\n"
               "restrict default limited kod nomodify nopeer noquery\n"
               "restrict 127.0.0.1")


@dataclass(frozen=True)
class Plan:
    """What the campus does, in seconds from the capture's start.

    The runaway runs one chronyd for ``runaway_alone`` s, then gains one every
    ``runaway_spacing`` (uniform range) s until ``runaway_daemons`` run;
    ``runaway_before`` of them start before the capture does (cold start).
    The NAT gateway's client count starts at ``nat_clients`` (all running before
    the capture starts) and steps one up or down every ``nat_churn`` s within
    ``nat_bounds``. The restart host's chronyd is restarted every ``restart_every`` s.
    Every chronyd polls every 2**``chrony_poll`` s.
    """

    duration: float
    runaway_daemons: int
    runaway_alone: float
    runaway_spacing: tuple[float, float]
    runaway_before: int = 0
    nat_clients: int = 12
    nat_bounds: tuple[int, int] = (10, 14)
    nat_churn: tuple[float, float] = (40.0, 80.0)
    restart_every: tuple[float, float] = (30.0, 60.0)
    preroll: float = 12.0
    seed: int = 10
    chrony_poll: int = CHRONY_POLL


@dataclass
class Event:
    """One daemon started or stopped: UNIX time, host address, what, instances running after."""

    time: float
    host: str
    action: str
    running: int
    detail: str = ""


@dataclass
class Campus:
    """The capture and its ground truth."""

    capture: Path
    capture_start: float
    events: list[Event] = field(default_factory=list)

    def running(self, host: str, at: float) -> int:
        """Instances running on ``host`` at UNIX time ``at`` (0 before the first start)."""
        count = 0
        for event in self.events:
            if event.host == host and event.time <= at:
                count = event.running
        return count

    def first_time_running(self, host: str, count: int) -> float | None:
        """When ``host`` first ran ``count`` instances (None if it never did)."""
        return next((e.time for e in self.events if e.host == host and e.running >= count), None)

    def ground_truth(self) -> dict:
        return {"capture_start": self.capture_start, "server": SERVER, "hosts": HOSTS,
                "events": [asdict(e) for e in self.events]}


def need_daemons() -> None:
    """Skip the calling test unless it may make namespaces and every daemon and tool is installed."""
    reason = can_make_namespaces()
    if reason:
        pytest.skip(reason)
    for path, what in ((NTPD, "ntpsec (deploy/install.sh --all unpacks it to /opt/netmon-test/ntpsec)"),
                       (CHRONYD, "chrony"), (shutil.which("tcpdump") or "/usr/bin/tcpdump", "tcpdump"),
                       (shutil.which("editcap") or "/usr/bin/editcap", "editcap (tshark)"),
                       (shutil.which("nft") or "/usr/sbin/nft", "nftables"),
                       (shutil.which("setpriv") or "/usr/bin/setpriv", "setpriv")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"needs {what} at {path}")


def load_campus(folder: Path) -> tuple[Plan, Campus]:
    """A recorded campus (``record``'s campus.pcap, possibly gzipped, and ground-truth.json) and its plan."""
    truth = json.loads((folder / "ground-truth.json").read_text())
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in truth["plan"].items()})
    capture = next(folder.glob("campus.pcap*"))
    return plan, Campus(capture, truth["capture_start"], [Event(**e) for e in truth["events"]])


def ntpsec_config(workdir: Path, name: str, body: str) -> Path:
    path = workdir / f"{name}.conf"
    path.write_text(
        f"disable kernel\ndisable ntp\ndriftfile {workdir / name}.drift\nlogfile {workdir / name}.log\n{body}\n"
    )
    return path


def chronyd(lab: Lab, ns: Namespace, workdir: Path, name: str, extra: str = "",
            poll: int = CHRONY_POLL) -> subprocess.Popen:
    """One chronyd instance with its own config, pidfile, drift file and socket.

    Without ``extra`` it keeps chrony's default random source port per request;
    ``poll`` is log2 seconds (minpoll = maxpoll).
    """
    conf = workdir / f"{name}.conf"
    conf.write_text(
        f"server {SERVER} iburst minpoll {poll} maxpoll {poll}\n{extra}"
        f"pidfile {workdir / name}.pid\ndriftfile {workdir / name}.drift\n"
        f"bindcmdaddress {workdir / name}.sock\ncmdport 0\n"
    )
    log = open(workdir / f"{name}.err", "a")
    return lab.spawn(ns, no_clock_caps([CHRONYD, "-d", "-x", "-u", "root", "-f", str(conf)]), stderr=log)


def assert_config_parsed(workdir: Path, name: str) -> None:
    """Fail when ntpsec rejected a line of ``name``'s config: it runs on without it, silently."""
    errors = [line for line in (workdir / f"{name}.err").read_text().splitlines() if "syntax error" in line]
    assert not errors, f"ntpsec rejected its {name} config: {errors}"


def ntpsec(lab: Lab, ns: Namespace, workdir: Path, name: str, body: str) -> subprocess.Popen:
    conf = ntpsec_config(workdir, name, body)
    return lab.spawn(ns, no_clock_caps([NTPD, "-n", "-c", str(conf), "-p", str(workdir / f"{name}.pid")]),
                     stderr=open(workdir / f"{name}.err", "w"))


@dataclass
class Net:
    border: Namespace
    srv: Namespace
    outside: str
    hosts: dict[str, Namespace]
    nat_clients: list[Namespace]


def build(lab: Lab, nat_clients: int) -> Net:
    """Namespaces and veth pairs; the NAT gateway masquerades its clients behind 10.99.4.2."""
    border = lab.namespace("border")
    srv = lab.namespace("srv")
    outside, _ = lab.link(border, "198.51.100.254/24", srv, f"{SERVER}/24", name="o")
    srv.exec(["ip", "route", "add", "default", "via", "198.51.100.254"])
    border.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    hosts, uplink = {}, {}
    for i, addr in enumerate(HOSTS, 1):
        ns = hosts[addr] = lab.namespace(f"h{i}")
        _, uplink[addr] = lab.link(border, f"10.99.{i}.1/24", ns, f"{addr}/24", name=f"h{i}")
        ns.exec(["ip", "route", "add", "default", "via", f"10.99.{i}.1"])
    nat = hosts[NAT]
    nat.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    rules = (f'table ip nat {{\n chain post {{\n  type nat hook postrouting priority 100;\n'
             f'  oifname "{uplink[NAT]}" masquerade\n }}\n}}\n')
    subprocess.run(["ip", "netns", "exec", nat.name, "nft", "-f", "-"], input=rules, text=True, check=True,
                   capture_output=True)
    clients = []
    for i in range(1, nat_clients + 1):
        client = lab.namespace(f"n{i}")
        lab.link(nat, f"172.16.{i}.1/24", client, f"172.16.{i}.2/24", name=f"n{i}")
        client.exec(["ip", "route", "add", "default", "via", f"172.16.{i}.1"])
        clients.append(client)
    return Net(border, srv, outside, hosts, clients)


def _spread(rng: random.Random, start: float, end: float, span: tuple[float, float]) -> list[float]:
    """Times from ``start`` (excluded) to ``end``, ``span`` (uniform range, s) apart."""
    times, t = [], start
    while True:
        t += rng.uniform(*span)
        if t >= end:
            return times
        times.append(t)


def run_campus(lab: Lab, workdir: Path, plan: Plan) -> Campus:
    """Carry out ``plan``; return the border capture (UDP/123 only) and its ground truth."""
    rng = random.Random(plan.seed)
    net = build(lab, plan.nat_bounds[1])
    events: list[Event] = []
    procs: dict[str, list[subprocess.Popen]] = {addr: [] for addr in HOSTS}
    nat_procs: dict[int, subprocess.Popen] = {}
    names = iter(range(10**6))

    def start(addr: str, detail: str = "") -> None:
        ns = net.hosts[addr]
        name = f"{HOSTS[addr]}{next(names)}"
        if addr == GOOD_NTPSEC:
            procs[addr].append(ntpsec(lab, ns, workdir, name, f"server {SERVER} iburst minpoll 6 maxpoll 6"))
        else:
            procs[addr].append(chronyd(lab, ns, workdir, name, poll=plan.chrony_poll))
        events.append(Event(time.time(), addr, "start", len(procs[addr]), detail))

    def stop(addr: str) -> None:
        lab.stop(procs[addr].pop())
        events.append(Event(time.time(), addr, "stop", len(procs[addr])))

    def nat_start(i: int) -> None:
        nat_procs[i] = chronyd(lab, net.nat_clients[i], workdir, f"nat-client{i}-{next(names)}", poll=plan.chrony_poll)
        events.append(Event(time.time(), NAT, "start", len(nat_procs), f"172.16.{i + 1}.2"))

    def nat_stop(i: int) -> None:
        lab.stop(nat_procs.pop(i))
        events.append(Event(time.time(), NAT, "stop", len(nat_procs), f"172.16.{i + 1}.2"))

    ntpsec(lab, net.srv, workdir, "server", SERVER_CONF)
    time.sleep(2)  # orphanwait 1: the server answers with a stratum once it has chosen orphan mode
    assert_config_parsed(workdir, "server")
    for i in range(plan.nat_clients):
        nat_start(i)
    # chronyd's iburst (4 requests 2 s apart) of daemons started before the capture is over when it begins
    busy = max(plan.preroll - 8.0, 0.0) if plan.runaway_before else 0.0
    for _ in range(plan.runaway_before):
        start(RUNAWAY, "before capture")
        time.sleep(busy / max(plan.runaway_before, 1))
    time.sleep(plan.preroll - busy)

    capture = workdir / "border.pcap"
    tcpdump = lab.spawn(net.border, ["tcpdump", "-i", net.outside, "-U", "-w", str(capture), "udp", "port", "123"],
                        stderr=open(workdir / "tcpdump.err", "w"))
    assert wait_for(lambda: capture.exists() and capture.stat().st_size > 0, 10), "tcpdump did not start"
    t0 = time.time()

    schedule: list[tuple[float, int, object]] = []
    seq = iter(range(10**6))

    def at(offset: float, action) -> None:
        heapq.heappush(schedule, (offset, next(seq), action))

    at(0.5, lambda: start(GOOD_CHRONY))
    at(0.5, lambda: start(GOOD_NTPSEC))
    at(1.0, lambda: start(RESTART, "boot"))
    for offset in _spread(rng, 1.0, plan.duration - 10.0, plan.restart_every):
        at(offset, lambda: (stop(RESTART), start(RESTART, "restart")))
    grown = plan.runaway_before
    if grown == 0:
        at(2.0, lambda: start(RUNAWAY))
        grown = 1
    t = 2.0 + (plan.runaway_alone if plan.runaway_before == 0 else 0.0)
    for _ in range(grown, plan.runaway_daemons):
        t += rng.uniform(*plan.runaway_spacing)
        if t >= plan.duration - 10.0:
            break
        at(t, lambda: start(RUNAWAY))

    def churn() -> None:
        low, high = plan.nat_bounds
        up = len(nat_procs) <= low or (len(nat_procs) < high and rng.random() < 0.5)
        if up:
            nat_start(rng.choice([i for i in range(high) if i not in nat_procs]))
        else:
            nat_stop(rng.choice(sorted(nat_procs)))

    for offset in _spread(rng, 0.0, plan.duration - 10.0, plan.nat_churn):
        at(offset, churn)

    while schedule:
        offset, _, action = heapq.heappop(schedule)
        time.sleep(max(0.0, t0 + offset - time.time()))
        action()
    time.sleep(max(0.0, t0 + plan.duration - time.time()))
    lab.stop(tcpdump)
    return Campus(capture, t0, events)


#: a config that declares the NAT gateway's address a group of kind "gateway"
GATEWAY_DECLARED = f"""[campus]
internal = ["10.99.0.0/16"]

[campus.groups]
gateways = ["{NAT}/32"]

[detect.hosts]
kinds = {{ gateways = "gateway" }}
"""


def replay(capture: Path, workdir: Path, interval: float = 10.0, config: str = "") -> list[dict]:
    """``netmon replay`` of ``capture`` with 10.99.0.0/16 as campus; the findings, one dict each.

    ``config`` is TOML text for ``--config`` (none by default). Each replay runs in a
    directory of its own under ``workdir``, so it starts from no model checkpoint
    (replay keeps one under ./models).
    """
    workdir = workdir / f"replay-{capture.name.split('.')[0]}{'-config' if config else ''}"
    workdir.mkdir(exist_ok=True)
    findings = workdir / "findings.jsonl"
    options = ["--internal", "10.99.0.0/16"]
    if config:
        (workdir / "netmon.toml").write_text(config)
        options = ["--config", str(workdir / "netmon.toml")]
    result = subprocess.run(
        [sys.executable, "-m", "netmon", "replay", str(capture), *options,
         "--interval", str(interval), "--findings-json", str(findings), "--db", str(workdir / "netmon.db")],
        capture_output=True, text=True, timeout=300, cwd=workdir,
    )
    assert result.returncode == 0, f"netmon replay failed: {result.stderr[-2000:]}"
    return [json.loads(line) for line in findings.read_text().splitlines() if line.strip()]


def kod_rate_replies(capture: Path) -> dict[str, int]:
    """KoD RATE replies in the capture, per destination host."""
    counts: dict[str, int] = {}
    for frames in read_frames(capture):
        rows = decode_frames(frames)
        kod = rows[(rows["mode"] == 4) & (rows["stratum"] == 0) & (rows["ref_id"] == RATE)]
        for lo in kod["dst_lo"]:
            host = ".".join(str((int(lo) >> s) & 0xFF) for s in (24, 16, 8, 0))
            counts[host] = counts.get(host, 0) + 1
    return counts


def cut(capture: Path, start: float, dst: Path) -> Path:
    """The packets of ``capture`` from UNIX time ``start`` on: monitoring that begins mid-incident."""
    subprocess.run(["editcap", "-A", f"{start:.6f}", str(capture), str(dst)], check=True, capture_output=True)
    return dst


#: the recorded plan: a runaway growing to 30 daemons, one every 20-40 s (about 16 minutes)
RECORD = Plan(duration=1020.0, runaway_daemons=30, runaway_alone=60.0, runaway_spacing=(20.0, 40.0))


def record(outdir: Path, plan: Plan = RECORD) -> Campus:
    """Run ``plan`` and write the capture and its ground truth (ground-truth.json) to ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    work = outdir / "work"
    work.mkdir(exist_ok=True)
    with Lab() as lab:
        campus = run_campus(lab, work, plan)
    final = outdir / "campus.pcap"
    shutil.copyfile(campus.capture, final)
    truth = campus.ground_truth() | {"plan": asdict(plan)}
    (outdir / "ground-truth.json").write_text(json.dumps(truth, indent=1))
    return Campus(final, campus.capture_start, campus.events)


if __name__ == "__main__":
    done = record(Path(sys.argv[1]))
    print(json.dumps({"capture": str(done.capture), "events": len(done.events)}))
