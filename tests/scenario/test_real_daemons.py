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
64 s default minimum. The server's ``limited kod`` (ntpsec's built-in limits) sends
real KoD RATE to the runaway's summed rate, never to a single well-behaved client.

Clock safety: chronyd runs with ``-x`` and ntpsec with ``disable kernel`` and
``disable ntp``, and every daemon is wrapped in ``no_clock_caps`` (no CAP_SYS_TIME).
All addresses live inside the namespaces the ``lab`` fixture creates; they are built
by ``campus.build``, whose NAT and restart hosts stay idle here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.scenario.campus import (GOOD_CHRONY, GOOD_NTPSEC, RUNAWAY, SERVER, SERVER_CONF, assert_config_parsed, build,
                                   chronyd, kod_rate_replies, need_daemons, ntpsec, replay)
from tests.support.lab import wait_for

#: the runaway's daemons all send from port 123, as the incident's ntpd did
SHARED_PORT = "acquisitionport 123\n"

pytestmark = pytest.mark.root


def run_scenario(lab, workdir: Path, instances: int, warm: float, spacing: float, tail: float) -> tuple[Path, list[float]]:
    """Run the daemons; return the border capture and when each runaway daemon started (UNIX s).

    The runaway host runs one chronyd for ``warm`` seconds (its normal life, which
    the per-host models learn), then one more starts every ``spacing`` seconds
    until ``instances`` run; the capture goes on ``tail`` seconds after the last.
    """
    net = build(lab, nat_clients=0)
    hosts = net.hosts
    capture = workdir / "border.pcap"
    tcpdump = lab.spawn(net.border, ["tcpdump", "-i", net.outside, "-U", "-w", str(capture), "udp", "port", "123"],
                        stderr=open(workdir / "tcpdump.err", "w"))
    assert wait_for(lambda: capture.exists() and capture.stat().st_size > 0, 10), "tcpdump did not start"
    ntpsec(lab, net.srv, workdir, "server", SERVER_CONF)
    time.sleep(2)
    assert_config_parsed(workdir, "server")
    ntpsec(lab, hosts[GOOD_NTPSEC], workdir, "client", f"server {SERVER} iburst minpoll 6 maxpoll 6")
    chronyd(lab, hosts[GOOD_CHRONY], workdir, "good", poll=1)
    starts = []
    for i in range(instances):  # the cron job: one more daemon every `spacing` seconds, none ever stops
        starts.append(time.time())
        chronyd(lab, hosts[RUNAWAY], workdir, f"runaway{i}", SHARED_PORT, poll=1)
        time.sleep(warm if i == 0 else spacing)
    time.sleep(tail)
    lab.stop(tcpdump)
    return capture, starts


#: (instances, seconds alone, seconds between daemons, seconds after the last)
SHORT = (6, 20.0, 10.0, 20.0)
LONG = (16, 120.0, 30.0, 60.0)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("timing", [
    pytest.param(SHORT, id="short"),
    pytest.param(LONG, id="long", marks=[pytest.mark.slow, pytest.mark.skipif(
        not os.environ.get("NETMON_LONG_SCENARIO"), reason="about 10 minutes of daemons; set NETMON_LONG_SCENARIO=1")]),
])
def test_host_where_daemons_accumulate_is_flagged_and_well_behaved_daemons_are_not(lab, tmp_path, timing):
    need_daemons()
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
