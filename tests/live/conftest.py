"""A campus edge in network namespaces: two inside hosts, a border router, an outside server.

    inside1 (10.77.1.2, fd77:1::2) --\\                        /-- outside (10.66.0.2, fd66::2)
                                      border (forwarding) --bout
    inside2 (10.77.2.2, fd77:2::2) --/

The collectors watch ``bout``, the border's outside-facing interface: requests leave
on its egress, replies and KoD arrive on its ingress. Every address lives in the
lab's namespaces; the NTP daemons never touch the clock (``-x`` and no CAP_SYS_TIME).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from netmon.batch import OBS_DTYPE, Frames, Observations, addr_halves, addr_text
from netmon.decode.frames import decode_frames
from netmon.sources import pcapfile
from tests.support.lab import Lab, Namespace, can_make_namespaces, no_clock_caps, wait_for

REPO = Path(__file__).resolve().parents[2]
INTERNAL = ["10.77.0.0/16", "fd77::/16"]
SERVER4, SERVER6 = "10.66.0.2", "fd66::2"
HOST1, HOST2 = "10.77.1.2", "10.77.2.2"
HOST2_6 = "fd77:2::2"
NTPD = "/opt/netmon-test/ntpsec/usr/sbin/ntpd"  # deploy/install.sh --all unpacks ntpsec here


@dataclass
class Edge:
    lab: Lab
    border: Namespace
    inside1: Namespace
    inside2: Namespace
    outside: Namespace
    bout: str  # border interface toward outside (the one watched)
    oif: str  # outside's interface toward the border
    tmp: Path
    procs: list = field(default_factory=list)

    def mac(self, ns: Namespace, ifname: str) -> str:
        return ns.exec(["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()

    def traffic(self, *jobs: tuple[Namespace, list[str]]) -> None:
        """Run tests.live.traffic once per (namespace, arguments), all at once, and wait for them."""
        procs = [subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-m", "tests.live.traffic", *args],
                                  cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for ns, args in jobs]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"traffic generator failed: {err.decode()[-2000:]}"

    def tcpdump(self, path: Path, ns: Namespace | None = None, ifname: str | None = None) -> subprocess.Popen:
        """tcpdump writing every UDP/123 frame (any VLAN depth) of the watched interface to ``path``."""
        ns = ns or self.border
        expr = "udp port 123 or (vlan and udp port 123) or (vlan and udp port 123)"
        # no --immediate-mode: with it, libpcap's per-packet wake-ups lost a quarter of a burst on a
        # busy machine; tests that stop right after their traffic wait for a marker packet instead
        proc = self.lab.spawn(ns, ["tcpdump", "-i", ifname or self.bout, "-U", "-n", "-s", "0", "-w", str(path),
                                   expr], stderr=subprocess.PIPE)
        assert wait_for(lambda: path.exists() and path.stat().st_size > 0, 10), "tcpdump did not start"
        time.sleep(0.3)
        return proc

    def stop_tcpdump(self, proc: subprocess.Popen) -> str:
        time.sleep(0.5)
        self.lab.stop(proc)
        return proc.stderr.read().decode() if proc.stderr else ""

    def ntpsec(self, ns: Namespace, name: str, lines: list[str]) -> subprocess.Popen | None:
        """ntpsec's ntpd (classic client: port 123) that never sets the clock; None when not unpacked."""
        if not Path(NTPD).exists():
            return None
        work = self.tmp / name
        work.mkdir()
        conf = work / "ntp.conf"
        conf.write_text("\n".join(["disable kernel", "disable ntp", f"driftfile {work}/drift",
                                   f"logfile {work}/log", *lines, ""]))
        return self.lab.spawn(ns, no_clock_caps([NTPD, "-n", "-c", str(conf), "-p", str(work / "pid")]))

    def chrony(self, ns: Namespace, name: str, lines: list[str]) -> subprocess.Popen:
        """chronyd that never sets the clock (-x, no CAP_SYS_TIME), own pid/socket files."""
        work = self.tmp / name
        work.mkdir()
        conf = work / "chrony.conf"
        conf.write_text("\n".join([*lines, f"pidfile {work}/chronyd.pid", "cmdport 0", f"bindcmdaddress {work}/sock",
                                   "", ""]))
        return self.lab.spawn(ns, no_clock_caps(["chronyd", "-d", "-x", "-u", "root", "-f", str(conf)]))


@pytest.fixture
def edge(lab: Lab, tmp_path: Path) -> Edge:
    return make_edge(lab, tmp_path)


def make_edge(lab: Lab, tmp_path: Path) -> Edge:
    """The topology above, in ``lab``; skips when a tool is missing."""
    for tool in ("tcpdump", "chronyd", "clang"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (deploy/install.sh --all installs it)")
    border, inside1, inside2, outside = (lab.namespace(n) for n in ("border", "in1", "in2", "out"))
    lab.link(inside1, "10.77.1.2/24", border, "10.77.1.1/24", name="i1")
    lab.link(inside2, "10.77.2.2/24", border, "10.77.2.1/24", name="i2")
    oif, bout = lab.link(outside, "10.66.0.2/24", border, "10.66.0.1/24", name="o")
    for ns, ifname, addr in ((inside1, f"{lab.prefix[:6]}ai1", "fd77:1::2/64"),
                             (inside2, f"{lab.prefix[:6]}ai2", "fd77:2::2/64"), (outside, oif, "fd66::2/64")):
        ns.exec(["ip", "-6", "addr", "add", addr, "dev", ifname, "nodad"])
    for ifname, addr in ((f"{lab.prefix[:6]}bi1", "fd77:1::1/64"), (f"{lab.prefix[:6]}bi2", "fd77:2::1/64"),
                         (bout, "fd66::1/64")):
        border.exec(["ip", "-6", "addr", "add", addr, "dev", ifname, "nodad"])
    border.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    border.exec(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    for ns, gw4, gw6 in ((inside1, "10.77.1.1", "fd77:1::1"), (inside2, "10.77.2.1", "fd77:2::1"),
                         (outside, "10.66.0.1", "fd66::1")):
        ns.exec(["ip", "route", "add", "default", "via", gw4])
        ns.exec(["ip", "-6", "route", "add", "default", "via", gw6])
    return Edge(lab, border, inside1, inside2, outside, bout, oif, tmp_path)


def run_ntp_traffic(edge: Edge, flood: int = 300) -> None:
    """A chrony server outside; a chrony client polling it every 0.25 s (IPv4 and IPv6) and an
    ntpsec client (port 123); a crafted flood of requests (IPv4 and IPv6), KoD replies, and
    VLAN/QinQ-tagged KoD."""
    server = edge.chrony(edge.outside, "server", ["local stratum 8", "allow all", "allow ::/0"])
    time.sleep(0.5)
    client = edge.chrony(edge.inside1, "client", [f"server {SERVER4} iburst minpoll -2 maxpoll -2",
                                                  f"server {SERVER6} iburst minpoll -2 maxpoll -2"])
    ntpd = edge.ntpsec(edge.inside2, "ntpsec", [f"server {SERVER4} iburst minpoll 1 maxpoll 1"])
    time.sleep(2.0)
    mac = edge.mac(edge.border, edge.bout)
    tagged = ["frames", "--iface", edge.oif, "--dst-mac", mac, "--count", "15"]
    edge.traffic(
        (edge.inside2, ["requests", "--dst", SERVER4, "--count", str(flood)]),
        (edge.inside2, ["requests", "--dst", SERVER6, "--count", str(flood // 3), "--seed", "2"]),
        (edge.outside, ["requests", "--dst", HOST2, "--count", "20", "--kod", "RATE", "--seed", "3"]),
        (edge.outside, [*tagged, "--src", SERVER4, "--dst", HOST2, "--kod", "DENY", "--seed", "4", "--vlan", "100"]),
        (edge.outside, [*tagged, "--src", SERVER4, "--dst", HOST2, "--kod", "DENY", "--seed", "5", "--vlan", "300",
                        "--vlan", "200"]),
        (edge.outside, [*tagged, "--src", SERVER6, "--dst", HOST2_6, "--kod", "RSTR", "--seed", "6", "--vlan", "100"]),
    )
    time.sleep(0.5)
    for daemon in (ntpd, client):  # quiet before the collectors are compared
        if daemon is not None:
            edge.lab.stop(daemon)
    edge.lab.stop(server)
    time.sleep(0.5)


class Collector:
    """A live source run in a thread, every item kept."""

    def __init__(self, source) -> None:
        self.source = source
        self.items: list = []
        self.error: BaseException | None = None
        self._iterator = source.batches()  # attaches / opens now: errors surface here
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self._iterator:
                self.items.append(item)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> list:
        self.source.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the source did not stop within 15 s"
        self.source.close()
        assert self.error is None, f"the source failed: {self.error!r}"
        return self.items


def source_rows(items: list) -> tuple[np.ndarray, np.ndarray]:
    """(rows decoded from the source's Frames, header-less rows it yielded as Observations)."""
    frames = [decode_frames(i) for i in items if isinstance(i, Frames)]
    counts = [i.rows for i in items if isinstance(i, Observations)]
    empty = np.zeros(0, OBS_DTYPE)
    return (np.concatenate(frames) if frames else empty), (np.concatenate(counts) if counts else empty)


def pcap_rows(path: Path) -> np.ndarray:
    """The pcap path's observation rows for a capture (helper A's reader and decoder)."""
    parts = [decode_frames(frames) for frames in pcapfile.read_frames(path)]
    return np.concatenate(parts) if parts else np.zeros(0, OBS_DTYPE)


def per_host(rows: np.ndarray, hosts: list[str]) -> dict[tuple[str, str], tuple[float, float]]:
    """(host, "out"|"in") -> (packets, bytes) of observation rows."""
    out = {}
    for host in hosts:
        hi, lo = addr_halves(host)
        for direction, (h, l) in (("out", ("src_hi", "src_lo")), ("in", ("dst_hi", "dst_lo"))):
            mask = (rows[h] == hi) & (rows[l] == lo)
            out[(host, direction)] = (float(rows["packets"][mask].sum()), float(rows["bytes"][mask].sum()))
    return out


NTP_FIELDS = ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "vlan", "bytes", "leap", "version", "mode",
              "stratum", "poll", "precision", "root_delay", "root_disp", "ref_id", "ref_ts", "org_ts", "rec_ts",
              "xmt_ts", "ntp_len")


def field_multiset(rows: np.ndarray) -> np.ndarray:
    """The NTP fields of every row, as a sorted array: equal when two paths saw the same packets."""
    table = rows[list(NTP_FIELDS)].copy()
    return np.sort(table, order=list(NTP_FIELDS))


@dataclass
class Watched:
    """One traffic run seen at once by tcpdump, the eBPF source (uncapped) and the capture source."""

    expected: np.ndarray  # tcpdump's capture through the pcap path
    kernel: dict  # eBPF counters: (host, direction) -> (packets, bytes)
    ebpf_items: list
    capture_items: list
    health: dict


@pytest.fixture(scope="session")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Watched:
    """Runs the traffic once for every test that compares a collector with tcpdump."""
    from netmon import health
    from netmon.sources.capture import CaptureSource
    from netmon.sources.capture import Config as CaptureConfig
    from netmon.sources.ebpf import Config as EbpfConfig
    from netmon.sources.ebpf import EbpfSource

    reason = can_make_namespaces()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("watched")
    with Lab() as lab:
        edge = make_edge(lab, tmp)
        pcap = tmp / "bout.pcap"
        dump = edge.tcpdump(pcap)
        ebpf = Collector(EbpfSource(EbpfConfig(type="ebpf", interface=edge.bout, netns=edge.border.name,
                                               sample_rate=1e6, sample_burst=1e6, read_interval=0.5), INTERNAL))
        capture = Collector(CaptureSource(CaptureConfig(type="capture", interface=edge.bout, netns=edge.border.name,
                                                        ring_mb=8, promiscuous=True)))
        run_ntp_traffic(edge)
        edge.stop_tcpdump(dump)
        kernel = kernel_per_host(ebpf.source._attachment)
        result = Watched(pcap_rows(pcap), kernel, ebpf.finish(), capture.finish(), health.snapshot())
    return result


def kernel_per_host(att) -> dict[tuple[str, str], tuple[float, float]]:
    """The eBPF counters summed per (host, "out"|"in"): (packets, bytes)."""
    from netmon.sources.ebpf import loader

    keys, vals = att.read_counters()
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for key, val in zip(keys, vals):
        where = (addr_text(key["host_hi"], key["host_lo"]), "out" if key["dir"] == loader.DIR_OUT else "in")
        packets, nbytes = out.get(where, (0.0, 0.0))
        out[where] = (packets + float(val["packets"]), nbytes + float(val["bytes"]))
    return out
