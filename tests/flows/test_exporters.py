"""Real exporters on loopback: softflowd, pmacctd and nfcapd beside netmon (DESIGN 'Real parts')."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from collections import Counter

import numpy as np
import pytest

from netmon.sources.netflow.collector import Collector
from netmon.sources.netflow.listener import Allowlist, Listener
from tests.flows.support import keys
from tests.flows.exporters import Collecting, capture_truth, ntp_rows, pair_totals, stop_process, wait_for, write_capture


@pytest.fixture
def capture(tmp_path: Path) -> tuple[Path, np.ndarray]:
    ntp, background = ntp_rows()
    path = tmp_path / "ntp.pcap"
    write_capture(path, ntp, background)
    return path, capture_truth(path)


def softflowd_export(pcap: Path, port: int, version: str, workdir: Path, extra: list[str] | None = None) -> None:
    """softflowd reads the pcap, then softflowctl expires every flow and shuts it down."""
    ctl = workdir / f"softflowd-{version}.ctl"
    argv = ["softflowd", "-d", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", version, "-c", str(ctl),
            "-p", str(workdir / f"softflowd-{version}.pid"), *(extra or [])]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(ctl.exists, 10), f"softflowd made no control socket: {proc.stderr.read1(4096) if proc.poll() is not None else ''}"
        expire = ["softflowctl", "-c", str(ctl), "expire-all"]
        # the socket file appears a moment before softflowd accepts on it (seen on a busy machine)
        assert wait_for(lambda: subprocess.run(expire, capture_output=True, timeout=10).returncode == 0, 10, 0.2), \
            "softflowctl expire-all kept failing"
        subprocess.run(["softflowctl", "-c", str(ctl), "shutdown"], check=False, capture_output=True, timeout=10)
        proc.wait(timeout=10)
    finally:
        stop_process(proc)


@pytest.mark.skipif(shutil.which("softflowd") is None, reason="softflowd not installed (deploy/install.sh installs it)")
@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_softflowd_export_gives_the_same_ntp_totals_as_the_capture(capture, tmp_path: Path, version: str) -> None:
    pcap, truth = capture
    collecting = Collecting("netflow")
    try:
        softflowd_export(pcap, collecting.port, version, tmp_path, ["-6"] if version != "5" else [])
    finally:
        collecting.stop()
    got = collecting.observations()
    assert (got["ntp"] == 0).all() and (got["flows"] == 1).all()
    v4_only = version == "5"  # NetFlow v5 carries IPv4 only
    want = pair_totals(truth, v4_only)
    assert pair_totals(got) == want, f"NetFlow v{version}: per-pair NTP packets/bytes differ from the capture"


class AllRecords:
    """netmon's collector on loopback keeping every record (not only UDP/123), for peer comparison."""

    def __init__(self) -> None:
        self.listener = Listener(["127.0.0.1:0"], Allowlist([]), "netflow")
        self.port = self.listener.ports[0]
        self.collector = Collector()
        self.parts: list[np.ndarray] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for batch in self.listener.receive(0.1):
            for d in batch:
                self.collector.feed(d.payload, d.source)
            self.parts.append(self.collector.flush().flows)

    def stop(self) -> np.ndarray:
        time.sleep(0.5)
        self.listener.close()
        self._thread.join(timeout=5)
        return np.concatenate(self.parts)


def _nfdump_records(flowdir: Path) -> list[tuple]:
    out = subprocess.run(["nfdump", "-R", str(flowdir), "-q", "-o", "fmt:%sa,%da,%sp,%dp,%pr,%ipkt,%ibyt,%ts,%te", "-N"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    records = []
    for line in out.splitlines():
        sa, da, sp, dp, pr, pkts, byts, ts, te = (x.strip() for x in line.split(","))
        proto = {"TCP": 6, "UDP": 17, "ICMP": 1}.get(pr, pr)
        records.append((sa, da, int(sp), int(float(dp)), int(proto), int(pkts), int(byts)))
    return records


@pytest.mark.skipif(shutil.which("nfcapd") is None or shutil.which("softflowd") is None, reason="nfdump and softflowd needed")
@pytest.mark.parametrize("version", ["9", "10"])
def test_records_equal_nfdumps_for_the_same_export_stream(capture, tmp_path: Path, version: str) -> None:
    pcap, _ = capture
    ours = AllRecords()
    flowdir = tmp_path / "nfcapd"
    flowdir.mkdir()
    nfcapd = subprocess.Popen(["nfcapd", "-w", str(flowdir), "-b", "127.0.0.1", "-p", "0", "-t", "3600",
                               "-R", f"127.0.0.1/{ours.port}", "-P", str(tmp_path / "nfcapd.pid")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port = _bound_udp_port(nfcapd.pid)
        softflowd_export(pcap, port, version, tmp_path, ["-6"])
        assert wait_for(lambda: ours.collector.last_export > 0, 10), "nothing repeated to netmon by nfcapd"
    finally:
        stop_process(nfcapd)
        rows = ours.stop()
    theirs = Counter(_nfdump_records(flowdir))
    mine = Counter(k for k, n in keys(rows).items() for _ in range(n))
    assert sum(theirs.values()) > 20, "nfdump saw too few records to compare"
    assert mine == theirs, f"netmon and nfdump differ: only netmon {list((mine - theirs))[:3]}, only nfdump {list((theirs - mine))[:3]}"


def _bound_udp_port(pid: int) -> int:
    """The UDP port a process we started has bound (nfcapd -p 0 picks a free one)."""
    def found() -> int:
        out = subprocess.run(["ss", "-Hulnp"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if f"pid={pid}," in line:
                return int(line.split()[3].rsplit(":", 1)[1])
        return 0
    assert wait_for(lambda: found() > 0, 10), "nfcapd did not bind"
    return found()


@pytest.mark.skipif(shutil.which("pmacctd") is None, reason="pmacct not installed (deploy/install.sh installs it)")
def test_pmacctd_sampled_netflow_and_sflow_totals_fall_within_the_sampling_bound(tmp_path: Path) -> None:
    """pmacctd samples 1 in 4 packets of the capture; nfprobe (v9, rate in options data) and
    sfprobe (raw headers, rate per sample) both go to netmon, which scales by the rate.
    The scaled totals must lie within 4 standard deviations of the capture's true count."""
    ntp, background = ntp_rows(hosts=40)
    pcap = tmp_path / "ntp.pcap"
    write_capture(pcap, ntp, background)
    truth = capture_truth(pcap)
    rate = 4
    netflow, sflow = Collecting("netflow"), Collecting("sflow")
    log = tmp_path / "pmacctd.log"
    conf = tmp_path / "pmacctd.conf"
    conf.write_text("\n".join([
        "daemonize: false", f"pcap_savefile: {pcap}", "pcap_savefile_wait: true", f"logfile: {log}",
        "plugins: nfprobe[n], sfprobe[s]", f"sampling_rate: {rate}",
        f"nfprobe_receiver[n]: 127.0.0.1:{netflow.port}", "nfprobe_version[n]: 9",
        "nfprobe_timeouts[n]: udp=1:tcp=1:maxlife=1:expint=1:general=1",
        f"sfprobe_receiver[s]: 127.0.0.1:{sflow.port}", "sfprobe_agentip[s]: 127.0.0.1", "",
    ]))
    proc = subprocess.Popen(["pmacctd", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: log.exists() and "finished reading PCAP" in log.read_text(), 30), "pmacctd did not read the capture"
        assert wait_for(lambda: netflow.source.collector.last_export > 0 and sflow.frames, 15), "no exports arrived"
        time.sleep(3)  # nfprobe expires its flows every second
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stop_process(proc)
        netflow.stop()
        sflow.stop()
    n = float(truth["packets"].sum())
    bound = 4 * rate * np.sqrt(n * (1 / rate) * (1 - 1 / rate))
    for name, collected in (("nfprobe", netflow), ("sfprobe", sflow)):
        got = collected.observations()
        estimate = float(got["packets"].sum())
        assert abs(estimate - n) <= bound, f"{name}: {estimate} packets estimated, {n} true, bound {bound:.0f}"
        assert (got["packets"] % rate == 0).all(), f"{name}: counts not scaled by the 1-in-{rate} rate"
    assert all((f.weight == rate).all() for f in sflow.frames), "sFlow raw headers must carry the sampling rate as weight"


#: Per-host features flows can know (counts); the NTP-header ones must be NaN (unknown), not 0.
FLOW_FEATURES = ("requests_out", "replies_in", "requests_in", "replies_out", "bytes_out", "bytes_in", "servers", "client_ports", "clients", "reply_ratio")
HEADER_FEATURES = ("poll", "instances", "kod_rate", "after_kod", "org_mismatch", "mode3_out", "version4_out")


@pytest.mark.skipif(shutil.which("softflowd") is None, reason="softflowd not installed (deploy/install.sh installs it)")
def test_per_host_features_from_ipfix_equal_the_captures_and_header_features_are_unknown(capture, tmp_path: Path) -> None:
    from netmon.aggregate import Aggregator
    from netmon.config import Aggregate, Campus

    pcap, truth = capture
    collecting = Collecting("netflow")
    try:
        softflowd_export(pcap, collecting.port, "10", tmp_path, ["-6"])
    finally:
        collecting.stop()

    def features(rows: np.ndarray) -> dict[str, dict[str, float]]:
        aggregator = Aggregator(Campus(internal=["10.0.0.0/8", "2001:db8:1::/48"]), Aggregate(interval=3600))
        closed = aggregator.add(np.sort(rows, order="time")) + aggregator.flush()
        assert len(closed) == 1, "the whole capture lies in one hour-long interval"
        return {h: {k: float(v[i]) for k, v in closed[0].features.items()} for i, h in enumerate(closed[0].host)}

    direct, flows = features(truth), features(collecting.observations())
    assert sorted(direct) == sorted(flows)
    for host in direct:
        for name in FLOW_FEATURES:
            assert np.isclose(flows[host][name], direct[host][name], equal_nan=True), f"{host} {name}: flows {flows[host][name]}, capture {direct[host][name]}"
        for name in HEADER_FEATURES:
            assert np.isnan(flows[host][name]), f"{host} {name} should be unknown from flows, got {flows[host][name]}"
        assert flows[host]["flows"] > 0
