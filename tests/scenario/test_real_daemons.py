"""Real NTP daemons in network namespaces, captured at the border, replayed through netmon.

    srv (ntpsec: orphan-mode server, ``restrict default limited kod``)
     |  198.51.100.0/24        <- tcpdump on the border's outside veth
    border (router)
     |-- good-chrony  10.99.1.2   chronyd, one instance
     |-- good-ntpsec  10.99.2.2   ntpsec ntpd, one instance
     `-- runaway      10.99.3.2   chronyd instances accumulate, one more every few seconds

The runaway's instances each have their own config, pidfile, drift file and
command socket, and all send from port 123 (``acquisitionport 123``), as the
incident's ntpd instances did: the kernel hands every reply to one of them, so
the KoD RATE the server sends reaches one instance while the others carry on.
(ntpsec itself refuses a second instance: it cannot bind port 123 twice.)

Time is compressed: the chronyd instances poll every 2 s (poll 1) instead of
64-1024 s, a new one starts every ``spacing`` seconds instead of every hour, and
the capture is replayed with 10 s intervals. The ntpsec client keeps its real
64 s (after its iburst): ntpsec 1.2 advertises poll 0, which netmon holds to the
64 s default minimum. The server's ``discard average 1
minimum 0`` sends real KoD RATE to the runaway's summed rate, never to a single
well-behaved client.

Clock safety: chronyd runs with ``-x`` and ntpsec with ``disable kernel`` and
``disable ntp``, and every daemon is wrapped in ``no_clock_caps`` (no CAP_SYS_TIME).
All addresses live inside the namespaces the ``lab`` fixture creates.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netmon.decode.frames import decode_frames
from netmon.sources.pcapfile import read_frames
from tests.support.lab import no_clock_caps, wait_for

NTPD = "/opt/netmon-test/ntpsec/usr/sbin/ntpd"
CHRONYD = shutil.which("chronyd") or "/usr/sbin/chronyd"
SERVER = "198.51.100.1"
GOOD_CHRONY, GOOD_NTPSEC, RUNAWAY = "10.99.1.2", "10.99.2.2", "10.99.3.2"
RATE = int.from_bytes(b"RATE", "big")
#: the runaway's daemons all send from port 123, as the incident's ntpd did
SHARED_PORT = "acquisitionport 123\n"

pytestmark = pytest.mark.root


def _need_daemons() -> None:
    for path, what in ((NTPD, "ntpsec (deploy/install.sh --all unpacks it to /opt/netmon-test/ntpsec)"),
                       (CHRONYD, "chrony"), (shutil.which("tcpdump") or "/usr/bin/tcpdump", "tcpdump"),
                       (shutil.which("setpriv") or "/usr/bin/setpriv", "setpriv")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"needs {what} at {path}")


def ntpsec_config(workdir: Path, name: str, body: str) -> Path:
    path = workdir / f"{name}.conf"
    path.write_text(
        f"disable kernel\ndisable ntp\ndriftfile {workdir / name}.drift\nlogfile {workdir / name}.log\n{body}\n"
    )
    return path


def chronyd(lab, ns, workdir: Path, name: str, extra: str = ""):
    """One chronyd instance with its own config, pidfile, drift file and command socket."""
    conf = workdir / f"{name}.conf"
    conf.write_text(
        f"server {SERVER} iburst minpoll 1 maxpoll 1\n{extra}"
        f"pidfile {workdir / name}.pid\ndriftfile {workdir / name}.drift\n"
        f"bindcmdaddress {workdir / name}.sock\ncmdport 0\n"
    )
    log = open(workdir / f"{name}.err", "w")
    return lab.spawn(ns, no_clock_caps([CHRONYD, "-d", "-x", "-u", "root", "-f", str(conf)]), stderr=log)


def build_lab(lab, workdir: Path):
    border = lab.namespace("border")
    srv = lab.namespace("srv")
    hosts = {addr: lab.namespace(f"h{i}") for i, addr in enumerate((GOOD_CHRONY, GOOD_NTPSEC, RUNAWAY), 1)}
    outside, _ = lab.link(border, "198.51.100.254/24", srv, f"{SERVER}/24", name="o")
    for i, (addr, ns) in enumerate(hosts.items(), 1):
        lab.link(border, f"10.99.{i}.1/24", ns, f"{addr}/24", name=f"h{i}")
        ns.exec(["ip", "route", "add", "default", "via", f"10.99.{i}.1"])
    border.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    srv.exec(["ip", "route", "add", "default", "via", "198.51.100.254"])
    return border, srv, hosts, outside


def run_scenario(lab, workdir: Path, instances: int, warm: float, spacing: float, tail: float) -> tuple[Path, list[float]]:
    """Run the daemons; return the border capture and when each runaway daemon started (UNIX s).

    The runaway host runs one chronyd for ``warm`` seconds (its normal life, which
    the per-host models learn), then one more starts every ``spacing`` seconds
    until ``instances`` run; the capture goes on ``tail`` seconds after the last.
    """
    border, srv, hosts, outside = build_lab(lab, workdir)
    capture = workdir / "border.pcap"
    tcpdump = lab.spawn(border, ["tcpdump", "-i", outside, "-U", "-w", str(capture), "udp", "port", "123"],
                        stderr=open(workdir / "tcpdump.err", "w"))
    assert wait_for(lambda: capture.exists() and capture.stat().st_size > 0, 10), "tcpdump did not start"
    server_conf = ntpsec_config(workdir, "server", "tos orphan 6 orphanwait 1\n"
                                "restrict default limited kod nomodify nopeer noquery\n"
                                "restrict 127.0.0.1\ndiscard average 1 minimum 0")
    lab.spawn(srv, no_clock_caps([NTPD, "-n", "-c", str(server_conf), "-p", str(workdir / "server.pid")]),
              stderr=open(workdir / "server.err", "w"))
    time.sleep(2)
    client_conf = ntpsec_config(workdir, "client", f"server {SERVER} iburst minpoll 6 maxpoll 6")
    lab.spawn(hosts[GOOD_NTPSEC], no_clock_caps([NTPD, "-n", "-c", str(client_conf), "-p", str(workdir / "client.pid")]),
              stderr=open(workdir / "client.err", "w"))
    chronyd(lab, hosts[GOOD_CHRONY], workdir, "good")
    starts = []
    for i in range(instances):  # the cron job: one more daemon every `spacing` seconds, none ever stops
        starts.append(time.time())
        chronyd(lab, hosts[RUNAWAY], workdir, f"runaway{i}", SHARED_PORT)
        time.sleep(warm if i == 0 else spacing)
    time.sleep(tail)
    lab.stop(tcpdump)
    return capture, starts


def replay(capture: Path, workdir: Path) -> list[dict]:
    findings = workdir / "findings.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "netmon", "replay", str(capture), "--internal", "10.99.0.0/16", "--interval", "10",
         "--findings-json", str(findings), "--db", str(workdir / "netmon.db")],
        capture_output=True, text=True, timeout=300,
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


#: (instances, seconds alone, seconds between daemons, seconds after the last)
SHORT = (6, 20.0, 10.0, 20.0)
LONG = (16, 120.0, 30.0, 60.0)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("timing", [
    pytest.param(SHORT, id="short"),
    pytest.param(LONG, id="long", marks=[pytest.mark.slow, pytest.mark.skipif(
        not os.environ.get("NETMON_LONG_SCENARIO"), reason="about 10 minutes of daemons; set NETMON_LONG_SCENARIO=1")]),
])
def test_host_where_daemons_accumulate_is_flagged_and_well_behaved_daemons_are_not(lab, tmp_path, monkeypatch, timing):
    _need_daemons()
    monkeypatch.chdir(tmp_path)  # replay keeps its model checkpoint under ./models
    instances, warm, spacing, tail = timing
    started = time.monotonic()
    capture, starts = run_scenario(lab, tmp_path, instances, warm, spacing, tail)
    daemon_time = time.monotonic() - started
    kod = kod_rate_replies(capture)
    assert kod.get(RUNAWAY, 0) > 0, f"the strict server sent no KoD RATE to the runaway host: {kod}"
    assert not kod.get(GOOD_CHRONY) and not kod.get(GOOD_NTPSEC), f"a single well-behaved client drew KoD: {kod}"

    found = [f for f in replay(capture, tmp_path) if f["severity"] in ("warning", "critical")]
    flagged = {f["host"] for f in found}
    assert RUNAWAY in flagged, f"the host with accumulating daemons was not flagged; findings: {found[:5]}"
    assert not flagged & {GOOD_CHRONY, GOOD_NTPSEC}, f"well-behaved daemons flagged: {[f for f in found if f['host'] != RUNAWAY][:5]}"

    first = min(f["end"] for f in found if f["host"] == RUNAWAY)
    daemons = sum(1 for t in starts if t <= first)
    print(f"\nreal-daemon scenario: {daemon_time:.0f} s of daemon time; KoD RATE per host {kod}; runaway flagged "
          f"{first - starts[1]:.0f} s after its second daemon started, with {daemons} daemon(s) running; "
          f"rules {sorted({f['rule'] for f in found if f['host'] == RUNAWAY})}")
    assert daemons <= 4, f"flagged only once {daemons} daemons ran"
