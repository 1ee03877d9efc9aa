"""What the muzzle would tell nftables (dry run): addresses checked, text cleaned, rates converted."""

from __future__ import annotations

import json

import pytest

from netmon.act.muzzle import Config, Muzzle


def plan(tmp_path, host: str, **kwargs) -> str:
    muzzle = Muzzle(Config(audit_log=str(tmp_path / "audit.log"), nft="/nonexistent/nft"))
    muzzle.add(host, **kwargs)
    return "".join(muzzle.planned)


def test_ipv6_host_key_goes_to_the_v6_set_with_a_slow_rate_per_minute(tmp_path):
    script = plan(tmp_path, "2001:db8:1:2::/64", rate=0.5, duration=90)
    assert "add element inet netmon_muzzle hosts6 { 2001:db8:1:2::/64 timeout 90s" in script
    assert "ip6 saddr 2001:db8:1:2::/64 limit rate 30/minute burst 1 packets accept" in script


def test_ipv4_mapped_address_is_muzzled_as_ipv4(tmp_path):
    assert "hosts4 { 10.1.2.3 timeout" in plan(tmp_path, "::ffff:10.1.2.3")


@pytest.mark.parametrize("host", ["10.0.0.0/8; flush ruleset", "10.1.2.3 } ; delete table inet filter", "pool.ntp.org", ""])
def test_anything_but_an_address_is_refused(tmp_path, host):
    with pytest.raises(ValueError):
        plan(tmp_path, host)


def test_reason_cannot_break_out_of_the_nft_comment(tmp_path):
    script = plan(tmp_path, "10.1.2.3", reason='x" ; flush ruleset ; comment "\\')
    line = next(l for l in script.splitlines() if l.startswith("add element"))
    assert line.count('"') == 2 and "flush ruleset" in line.split('"')[1], line


def test_dry_run_is_audited_as_such(tmp_path):
    plan(tmp_path, "10.1.2.3", reason="ticket 7")
    entry = json.loads((tmp_path / "audit.log").read_text())
    assert entry["action"] == "add" and entry["dry_run"] is True and entry["reason"] == "ticket 7"
