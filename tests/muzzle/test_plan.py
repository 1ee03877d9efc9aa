"""What the muzzle would tell nftables (dry run): addresses checked, text cleaned, rates converted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from netmon.act.muzzle import Config, Muzzle
from netmon.cli import main

CAMPUS = ["10.0.0.0/8", "2001:db8::/32"]
CASES = Path(__file__).resolve().parents[1] / "cases"


def plan(tmp_path, host: str, **kwargs) -> str:
    muzzle = Muzzle(Config(audit_log=str(tmp_path / "audit.log"), nft="/nonexistent/nft"), CAMPUS)
    muzzle.add(host, **kwargs)
    return "".join(muzzle.planned)


def muzzle_cli(tmp_path, *args: str):
    config = tmp_path / "netmon.toml"
    config.write_text(f'[campus]\ninternal = {CAMPUS!r}\n[[sinks]]\ntype = "alerts"\n[sinks.muzzle]\n'
                      f'nft = "/nonexistent/nft"\naudit_log = "{tmp_path / "audit.log"}"\n')
    return CliRunner().invoke(main, ["muzzle", *args, "--config", str(config)], catch_exceptions=False)


@pytest.mark.parametrize("case", json.loads((CASES / "muzzle-hostile-arguments" / "cases.json").read_text()),
                         ids=lambda c: " ".join(c["argv"]))
def test_hostile_muzzle_arguments_are_refused_with_a_clear_message(tmp_path, case):
    done = muzzle_cli(tmp_path, *case["argv"])
    assert done.exit_code == 2, f"netmon muzzle {' '.join(case['argv'])} was accepted: {done.output}"
    assert case["error"] in " ".join(done.output.split()), done.output
    assert "Traceback" not in done.output and "nft" not in done.output.replace("nft comment", "")
    assert not (tmp_path / "audit.log").exists(), "a refused muzzle was audited as done"


def test_prefix_within_the_widest_allowed_inside_campus_is_planned(tmp_path):
    done = muzzle_cli(tmp_path, "add", "10.20.30.0/24", "--rate", "2")
    assert done.exit_code == 0, done.output
    assert "hosts4 { 10.20.30.0/24 timeout 3600s" in done.output and "held to 2 packets/s" in done.output


def test_address_outside_campus_is_muzzled_only_when_forced_and_audited_as_forced(tmp_path):
    done = muzzle_cli(tmp_path, "add", "192.0.2.7", "--force", "--drop")
    assert done.exit_code == 0, done.output
    assert "hosts4 { 192.0.2.7 timeout" in done.output and "dropped" in done.output
    assert json.loads((tmp_path / "audit.log").read_text())["forced"] is True


def test_no_campus_configured_refuses_unless_forced(tmp_path):
    muzzle = Muzzle(Config(audit_log=str(tmp_path / "audit.log"), nft="/nonexistent/nft"), [])
    with pytest.raises(ValueError, match=r"no campus prefixes configured \(\[campus\] internal\)"):
        muzzle.add("10.1.2.3")
    muzzle.add("10.1.2.3", force=True)


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), -1.0])
def test_muzzle_api_refuses_nan_inf_and_negative_rates(tmp_path, rate):
    with pytest.raises(ValueError, match="packets/s let through must be a number from 0"):
        plan(tmp_path, "10.1.2.3", rate=rate)


@pytest.mark.parametrize("key,value", [("rate", "nan"), ("rate", "inf"), ("rate", "-1.0"), ("duration", "inf"),
                                       ("duration", "0.0"), ("widest_v4", "33")])
def test_muzzle_config_refuses_non_finite_and_out_of_range_values(key, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=key):
        Config.model_validate({key: float(value)})


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
