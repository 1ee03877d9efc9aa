"""The muzzle in a network lab: nftables in the border namespace holds one host's UDP/123.

    client 10.99.1.2 --\\
                       border (forwards, runs nft via `ip netns exec`) -- server 10.99.3.2 (UDP 123, 1234)
    other  10.99.2.2 --/
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.lab import wait_for

pytestmark = pytest.mark.root

#: The receiver's marker port: never muzzled, drained last, so a marker logged means
#: every packet sent before it has arrived or was dropped.
MARKER = 1235

RECEIVER = """
import select, socket, sys
out = open(sys.argv[1], "a", buffering=1)
socks = []
for port in (123, 1234, MARKER):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.setblocking(False)
    socks.append(s)
out.write("ready\\n")
while True:
    ready = select.select(socks, [], [])[0]
    for s in (s for s in socks if s in ready):  # drained in port order: the marker port last
        while True:
            try:
                _, (src, _) = s.recvfrom(2048)
            except BlockingIOError:
                break
            out.write(f"{src} {s.getsockname()[1]}\\n")
""".replace("MARKER", str(MARKER))

SENDER = """
import socket, sys, time
dst, port, count, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    s.sendto(b"\\x23" + bytes(47), (dst, port))
    time.sleep(gap)
"""


@pytest.fixture
def border_lab(lab, tmp_path):
    if subprocess.run(["which", "nft"], capture_output=True).returncode != 0:
        pytest.skip("needs nftables (nft)")
    border, client, other, server = (lab.namespace(n) for n in ("border", "client", "other", "server"))
    for ns, net in ((client, 1), (other, 2), (server, 3)):
        lab.link(ns, f"10.99.{net}.2/24", border, f"10.99.{net}.1/24", name=f"n{net}")
        ns.exec(["ip", "route", "add", "default", "via", f"10.99.{net}.1"])
    border.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    log = tmp_path / "received.log"
    lab.spawn(server, [sys.executable, "-c", RECEIVER, str(log)])
    assert wait_for(lambda: log.exists() and "ready" in log.read_text()), "receiver did not start"
    config = tmp_path / "netmon.toml"
    config.write_text(f'[campus]\ninternal = ["10.99.0.0/16"]\n[[sinks]]\ntype = "alerts"\n[sinks.muzzle]\nenabled = true\n'
                      f'audit_log = "{tmp_path / "audit.log"}"\n')
    return {"border": border, "client": client, "other": other, "log": log, "config": config, "tmp": tmp_path}


def send(ns, count: int = 20, gap: float = 0.005, port: int = 123) -> None:
    ns.exec([sys.executable, "-c", SENDER, "10.99.3.2", str(port), str(count), str(gap)])


def received(log: Path, src: str, port: int = 123) -> int:
    return log.read_text().splitlines().count(f"{src} {port}")


def settled(env, ns, src: str) -> None:
    """Send one packet to the marker port (never muzzled) and wait until the receiver logged it:
    everything ``src`` sent before it has then arrived or was dropped."""
    before = received(env["log"], src, MARKER)
    send(ns, count=1, gap=0, port=MARKER)
    assert wait_for(lambda: received(env["log"], src, MARKER) > before, 30), "the marker packet never arrived"


def muzzle(env, *args: str) -> subprocess.CompletedProcess:
    argv = ["ip", "netns", "exec", env["border"].name, sys.executable, "-m", "netmon", "muzzle", *args, "--config", str(env["config"])]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=env["tmp"])
    assert done.returncode == 0, f"netmon muzzle {' '.join(args)} failed: {done.stderr}"
    return done


def delta(env, ns, src: str, port: int = 123, **kwargs) -> int:
    before = received(env["log"], src, port)
    send(ns, port=port, **kwargs)
    settled(env, ns, src)
    return received(env["log"], src, port) - before


def test_muzzled_host_ntp_stops_others_untouched_and_remove_restores(border_lab):
    env = border_lab
    assert delta(env, env["client"], "10.99.1.2") == 20, "lab broken: NTP did not pass before the muzzle"
    muzzle(env, "add", "10.99.1.2", "--for", "1h", "--reason", "abuse ticket 42")
    assert delta(env, env["client"], "10.99.1.2") == 0, "muzzled host's UDP/123 still passes"
    assert delta(env, env["other"], "10.99.2.2") == 20, "another host's NTP was touched"
    assert delta(env, env["client"], "10.99.1.2", port=1234) == 20, "the muzzled host's other UDP was touched"
    listed = muzzle(env, "list").stdout
    assert "10.99.1.2" in listed and "drop" in listed and "abuse ticket 42" in listed, listed
    muzzle(env, "remove", "10.99.1.2", "--reason", "fixed")
    assert delta(env, env["client"], "10.99.1.2") == 20, "NTP still blocked after `netmon muzzle remove`"
    assert "10.99.1.2" not in muzzle(env, "list").stdout
    audit = [json.loads(line) for line in (env["tmp"] / "audit.log").read_text().splitlines()]
    assert [(a["action"], a["host"], a["dry_run"]) for a in audit] == [("add", "10.99.1.2", False), ("remove", "10.99.1.2", False)]


def test_rate_limit_holds_host_to_its_rate(border_lab):
    env = border_lab
    muzzle(env, "add", "10.99.1.2", "--rate", "5", "--for", "1h")
    passed = delta(env, env["client"], "10.99.1.2", count=100, gap=0.01)  # 100 packets in ~1.2 s
    assert 3 <= passed <= 20, f"rate 5/s (burst 5) over ~1.2 s let {passed} of 100 through"
    assert "5/s" in muzzle(env, "list").stdout
    assert delta(env, env["other"], "10.99.2.2", count=100, gap=0.01) == 100, "another host was rate-limited"


def test_muzzle_is_gone_after_expiry(border_lab):
    env = border_lab
    muzzle(env, "add", "10.99.1.2", "--rate", "1", "--for", "2s")
    assert delta(env, env["client"], "10.99.1.2", count=20, gap=0.001) <= 3
    assert wait_for(lambda: "10.99.1.2" not in muzzle(env, "list").stdout, 30), "the muzzle did not expire"
    assert delta(env, env["client"], "10.99.1.2") == 20, "NTP still held after the muzzle expired"
    assert "10.99.1.2" not in muzzle(env, "list").stdout, "expired muzzle still listed"
    rules = env["border"].exec(["nft", "list", "chain", "inet", "netmon_muzzle", "muzzle"]).stdout
    assert "10.99.1.2" not in rules, f"expired host's rate rule not swept:\n{rules}"


def test_dry_run_changes_nothing_without_enabled(border_lab):
    env = border_lab
    env["config"].write_text('[campus]\ninternal = ["10.99.0.0/16"]\n[[sinks]]\ntype = "alerts"\n')
    done = muzzle(env, "add", "10.99.1.2")
    assert "add element inet netmon_muzzle hosts4" in done.stdout, done.stdout
    assert delta(env, env["client"], "10.99.1.2") == 20, "a dry run blocked traffic"
    assert env["border"].exec(["nft", "list", "table", "inet", "netmon_muzzle"], check=False).returncode != 0


def test_critical_alert_muzzles_automatically_when_config_allows(border_lab):
    import netmon.sinks.alerts as alerts
    from tests.alerts.receivers import finding, scored

    env = border_lab
    muzzle_config = {"enabled": True, "netns": env["border"].name, "audit_log": str(env["tmp"] / "auto.log"),
                     "auto_rules": ["rule.kod_ignored"], "auto_severities": ["critical"], "duration": 60}
    from netmon.config import validate

    sink = alerts.build(alerts.Config.model_validate(
        {"type": "alerts", "silences_file": "", "muzzle": muzzle_config}), validate({"campus": {"internal": ["10.99.0.0/16"]}}))
    sink.write(scored([finding(host="10.99.1.2", rule="rule.kod_ignored", severity="critical"),
                       finding(host="10.99.2.2", rule="rule.origin", severity="critical")]))
    sink.close()
    assert delta(env, env["client"], "10.99.1.2") == 0, "the critical kod_ignored host was not muzzled"
    assert delta(env, env["other"], "10.99.2.2") == 20, "a rule not allowed to muzzle muzzled its host"
    audit = [json.loads(line) for line in (env["tmp"] / "auto.log").read_text().splitlines()]
    assert len(audit) == 1 and audit[0]["host"] == "10.99.1.2" and "rule.kod_ignored" in audit[0]["reason"]


def test_automatic_muzzle_is_off_by_default(tmp_path):
    import netmon.sinks.alerts as alerts

    config = alerts.Config.model_validate({"type": "alerts"})
    assert not config.muzzle.enabled and config.muzzle.auto_rules == []
    assert not config.muzzle.wants("firing", "rule.kod_ignored", "critical")
