"""``netmon run`` and ``netmon cleanup`` with the real kernel: attach, reload, stop, crash, clean up;
the muzzle map; and the errors a missing privilege or tool gives."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netmon.sources.capture import CaptureSource
from netmon.sources.capture import Config as CaptureConfig
from netmon.sources.ebpf import loader
from netmon.sources.pcapfile import CaptureError
from netmon.sources.live import LiveError
from tests.live.conftest import HOST1, HOST2, INTERNAL, SERVER4, Edge, pcap_rows, per_host
from tests.support.lab import wait_for

pytestmark = pytest.mark.root
NETMON = str(Path(sys.executable).with_name("netmon"))


def write_config(edge: Edge, source: str = "ebpf") -> Path:
    path = edge.tmp / "netmon.toml"
    path.write_text(f"""
[campus]
internal = {INTERNAL!r}
[aggregate]
interval = 60
[[sources]]
type = "{source}"
interface = "{edge.bout}"
netns = "{edge.border.name}"
[[sinks]]
type = "store"
path = "{edge.tmp / 'netmon.db'}"
""")
    return path


def filters(edge: Edge) -> str:
    """Every tc filter on the watched interface, both hooks."""
    return "".join(edge.border.exec(["tc", "filter", "show", "dev", edge.bout, hook], check=False).stdout
                   for hook in ("ingress", "egress"))


def pins(pid: int) -> list[Path]:
    return sorted(loader.PIN_ROOT.glob(f"{pid}_*")) if loader.PIN_ROOT.is_dir() else []


def start_netmon(edge: Edge, config: Path) -> subprocess.Popen:
    log_path = edge.tmp / "netmon.log"
    log = open(log_path, "ab")
    proc = edge.lab.spawn(None, [NETMON, "run", "--config", str(config)], stdout=log, stderr=log)
    started = wait_for(lambda: proc.poll() is not None or any(
        line in log_path.read_text() for line in ("ebpf attached", "capture started")), 60)
    assert started and proc.poll() is None, f"netmon run did not start: {log_path.read_text()}"
    return proc


@pytest.mark.parametrize("source", ["ebpf", "capture"])
def test_run_flushes_the_last_interval_and_detaches_on_sigterm_after_a_reload(edge, source):
    config = write_config(edge, source)
    proc = start_netmon(edge, config)
    if source == "ebpf":
        assert f"netmon-{proc.pid}_" in filters(edge), "netmon run did not attach its filter"
    edge.traffic((edge.inside2, ["requests", "--dst", SERVER4, "--count", "40"]))
    proc.send_signal(signal.SIGHUP)
    log_path = edge.tmp / "netmon.log"
    wait_for(lambda: proc.poll() is not None or "config reloaded" in log_path.read_text(), 60)
    assert proc.poll() is None, f"netmon died on SIGHUP: {log_path.read_text()}"
    assert "config reloaded" in log_path.read_text(), f"no reload within 60 s: {log_path.read_text()}"
    if source == "ebpf":
        assert f"netmon-{proc.pid}_" in filters(edge), "not attached after the reload"
    edge.traffic((edge.inside1, ["requests", "--dst", SERVER4, "--count", "10"]))
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, f"netmon run failed: {(edge.tmp / 'netmon.log').read_text()}"

    assert "netmon-" not in filters(edge), f"filters left after a clean stop:\n{filters(edge)}"
    assert not pins(proc.pid), "pinned maps left after a clean stop"
    with sqlite3.connect(edge.tmp / "netmon.db") as db:
        rows = dict(db.execute("SELECT host, requests_out FROM intervals").fetchall())
    assert rows.get(HOST2) == 40, f"the open interval was not flushed at stop (store has {rows})"
    assert rows.get(HOST1) == 10, f"packets after the reload missing (store has {rows})"


def test_cleanup_removes_what_a_killed_netmon_left_attached(edge):
    proc = start_netmon(edge, write_config(edge))
    assert wait_for(lambda: f"netmon-{proc.pid}_" in filters(edge), 10), "netmon run did not attach its filter"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert f"netmon-{proc.pid}_" in filters(edge), "a SIGKILLed netmon should leave its filter behind"
    assert pins(proc.pid) or not loader.bpffs_mounted(), "netmon pinned nothing under /sys/fs/bpf/netmon"
    done = subprocess.run([NETMON, "cleanup"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout and f"{proc.pid}_" in done.stdout, done.stdout
    assert "netmon-" not in filters(edge), f"filters left after cleanup:\n{filters(edge)}"
    assert not pins(proc.pid), "pinned maps left after cleanup"


def test_muzzled_host_is_dropped_and_others_untouched(edge):
    att = loader.attach(edge.bout, edge.border.name, max_hosts=4096)
    try:
        att.set_internal(INTERNAL)
        assert loader.muzzle(HOST2, rate=0, expiry=time.time() + 60) >= 1, "no netmon muzzle map found"
        pcap = edge.tmp / "outside.pcap"
        dump = edge.tcpdump(pcap, edge.outside, edge.oif)
        edge.traffic((edge.inside1, ["requests", "--dst", SERVER4, "--count", "30"]),
                     (edge.inside2, ["requests", "--dst", SERVER4, "--count", "30", "--seed", "2"]))
        # tcpdump hands frames to its file a block at a time (up to 1 s late): wait for them
        wait_for(lambda: sent_by(pcap, HOST1) >= 30, 20)
        edge.stop_tcpdump(dump)
        arrived = per_host(pcap_rows(pcap), [HOST1, HOST2])
        assert arrived[(HOST1, "out")][0] == 30, f"an unmuzzled host lost packets: {arrived}"
        assert arrived[(HOST2, "out")][0] == 0, f"a muzzled host's packets got through: {arrived}"
        assert loader.muzzled()[HOST2]["dropped"] >= 30
        assert loader.unmuzzle(HOST2) >= 1
        assert HOST2 not in loader.muzzled()
    finally:
        loader.detach(att)


def sent_by(pcap: Path, host: str) -> float:
    """Packets from ``host`` in a capture tcpdump may still be writing (a cut last record: none yet)."""
    try:
        return per_host(pcap_rows(pcap), [host])[(host, "out")][0]
    except CaptureError:
        return 0.0


def test_muzzle_at_a_rate_lets_that_many_through(edge):
    att = loader.attach(edge.bout, edge.border.name, max_hosts=4096)
    try:
        att.set_internal(INTERNAL)
        loader.muzzle(HOST2, rate=5, attachments=[att])
        pcap = edge.tmp / "outside.pcap"
        dump = edge.tcpdump(pcap, edge.outside, edge.oif)
        edge.traffic((edge.inside2, ["requests", "--dst", SERVER4, "--count", "100"]))
        # HOST1 is not muzzled: once its request is in the capture, every HOST2 packet
        # the muzzle let through before it is too, however slow the machine
        edge.traffic((edge.inside1, ["requests", "--dst", SERVER4, "--count", "1"]))
        marked = wait_for(lambda: sent_by(pcap, HOST1) >= 1, 60)
        edge.stop_tcpdump(dump)
        assert marked, "the unmuzzled marker request never reached the capture (tcpdump or routing broken)"
        passed = per_host(pcap_rows(pcap), [HOST2])[(HOST2, "out")][0]
        assert 5 <= passed < 60, f"{passed} of 100 packets passed a 5/s muzzle"
    finally:
        loader.detach(att)


def test_missing_capabilities_say_what_to_grant(edge):
    config = write_config(edge)
    drop = "-bpf,-net_admin,-sys_admin,-perfmon,-net_raw"
    done = subprocess.run(["setpriv", f"--bounding-set={drop}", "--inh-caps=-all", NETMON, "run", "--config",
                           str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "needs CAP_BPF CAP_PERFMON CAP_NET_ADMIN" in done.stderr and "AmbientCapabilities" in done.stderr, \
        done.stderr
    assert "Traceback" not in done.stderr


def test_missing_clang_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LiveError, match="clang not found.*apt-get install clang"):
        loader.compile_program(cache_dir=tmp_path / "cache")


def test_kernel_without_btf_says_what_to_use(monkeypatch, tmp_path):
    # a kernel without BTF cannot be booted here: the one mocked fault
    monkeypatch.setattr(loader, "BTF_PATH", tmp_path / "vmlinux")
    with pytest.raises(LiveError, match="no BTF.*CONFIG_DEBUG_INFO_BTF"):
        loader.check_kernel()


def test_missing_interface_is_reported_by_check_config(edge):
    config = write_config(edge)
    config.write_text(config.read_text().replace(edge.bout, "nosuch0"))
    done = subprocess.run([NETMON, "check-config", str(config)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "sources[0] (ebpf): interface 'nosuch0' not found" in done.stderr, done.stderr


def test_a_non_ethernet_interface_is_refused_with_the_reason(lab):
    ns = lab.namespace("tun")
    ns.exec(["ip", "tuntap", "add", "mode", "tun", "name", "nmtun0"])
    ns.exec(["ip", "link", "set", "nmtun0", "up"])
    with pytest.raises(LiveError, match="'nmtun0' is not Ethernet"):
        loader.attach("nmtun0", ns.name, max_hosts=1024)
    assert "netmon-" not in ns.exec(["tc", "filter", "show", "dev", "nmtun0", "ingress"], check=False).stdout
    with pytest.raises(LiveError, match="'nmtun0' is not Ethernet"):
        CaptureSource(CaptureConfig(type="capture", interface="nmtun0", netns=ns.name)).batches()


def test_a_second_attach_to_the_same_interface_points_to_cleanup(edge):
    first = loader.attach(edge.bout, edge.border.name, max_hosts=1024)
    try:
        with pytest.raises(LiveError, match="already carries a netmon filter.*netmon cleanup"):
            loader.attach(edge.bout, edge.border.name, max_hosts=1024)
        assert f"netmon-{loader.owner_tag(os.getpid())}" in filters(edge), "the failed attach removed the first one"
    finally:
        loader.detach(first)
    assert "netmon-" not in filters(edge)
