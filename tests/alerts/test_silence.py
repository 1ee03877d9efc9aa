"""Silences and the allowlist, from config and from `netmon silence`; check-config on hooks."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from netmon import health
from netmon.cli import main
from netmon.commands.check_config import problems
from tests.alerts.receivers import finding, scored
from tests.alerts.test_webhook import sink


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_silence_command_add_list_remove_roundtrip(tmp_path):
    path = str(tmp_path / "s.json")
    added = cli("silence", "add", "--prefix", "10.1.0.0/16", "--for", "2h", "--reason", "lab rebuild", "--file", path)
    assert added.exit_code == 0, added.output
    rule_id = added.output.split()[0]
    listed = cli("silence", "list", "--file", path).output
    assert rule_id in listed and "prefix=10.1.0.0/16" in listed and "lab rebuild" in listed
    assert cli("silence", "remove", rule_id, "--file", path).exit_code == 0
    assert rule_id not in cli("silence", "list", "--file", path).output
    assert cli("silence", "remove", "nosuchid", "--file", path).exit_code == 1


def test_silence_command_rejects_bad_input(tmp_path):
    path = str(tmp_path / "s.json")
    assert cli("silence", "add", "--host", "not-an-ip", "--reason", "x", "--file", path).exit_code != 0
    assert cli("silence", "add", "--host", "10.0.0.1", "--for", "soon", "--reason", "x", "--file", path).exit_code != 0
    assert cli("silence", "add", "--reason", "x", "--file", path).exit_code != 0


def test_running_sink_honours_a_silence_added_by_command(tmp_path, http_receiver):
    s = sink(tmp_path, [{"kind": "webhook", "url": http_receiver.url}])
    s.write(scored([finding(host="10.1.2.3", rule="rule.a")]))
    cli("silence", "add", "--host", "10.1.2.4", "--reason", "known", "--file", str(tmp_path / "silences.json"))
    s.write(scored([finding(host="10.1.2.4", rule="rule.a"), finding(host="10.9.0.1", rule="rule.a")], start=1_700_000_060.0))
    s.close()
    assert sorted(r.json()["host"] for r in http_receiver.received) == ["10.1.2.3", "10.9.0.1"]
    assert health.snapshot()["alerts.silenced"] == 1


def test_allowlist_and_silences_from_config_match_prefix_server_and_expire(tmp_path, http_receiver):
    s = sink(tmp_path, [{"kind": "webhook", "url": http_receiver.url}],
             allowlist=[{"server": "192.0.2.0/24", "reason": "our own stratum-1"}],
             silences=[{"prefix": "10.5.0.0/16", "reason": "lab", "expires": time.time() + 3600},
                       {"host": "10.6.0.1", "reason": "old", "expires": time.time() - 1}])
    s.write(scored([
        finding(host="10.4.0.1", server="192.0.2.7", rule="r.1"),   # allowlisted server
        finding(host="10.5.3.3", server="198.51.100.1", rule="r.2"),  # silenced prefix
        finding(host="10.6.0.1", server="198.51.100.1", rule="r.3"),  # silence expired: alerts
    ]))
    s.close()
    assert [r.json()["host"] for r in http_receiver.received] == ["10.6.0.1"]
    assert health.snapshot()["alerts.allowed"] == 1 and health.snapshot()["alerts.silenced"] == 1


def test_check_config_names_each_bad_hook(tmp_path):
    config = tmp_path / "netmon.toml"
    config.write_text(
        '[[sinks]]\ntype = "alerts"\n'
        '[[sinks.hooks]]\nkind = "webhook"\nurl = "htp:/bad"\n'
        '[[sinks.hooks]]\nkind = "alertmanager"\nname = "am"\nurl = "http://127.0.0.1:1"\n'
        '[[sinks.hooks]]\nkind = "exec"\nargv = ["/nonexistent/notify"]\n'
    )
    found = "\n".join(problems(str(config)))
    assert "webhook0 (webhook): url htp:///… must start with http" in found, found
    assert "am (alertmanager)" in found and "unreachable" in found, found
    assert "'/nonexistent/notify' is not found" in found, found


def test_check_config_rejects_a_silence_without_reason(tmp_path):
    config = tmp_path / "netmon.toml"
    config.write_text('[[sinks]]\ntype = "alerts"\n[[sinks.silences]]\nhost = "10.0.0.1"\n')
    found = "\n".join(problems(str(config)))
    assert "reason" in found and "Field required" in found, found


def test_silence_list_with_config_shows_config_entries_and_uses_its_file(tmp_path):
    silences = tmp_path / "custom.json"
    config = tmp_path / "netmon.toml"
    config.write_text(f'[[sinks]]\ntype = "alerts"\nsilences_file = "{silences}"\n'
                      '[[sinks.allowlist]]\nhost = "10.0.0.123"\nreason = "campus NTP server"\n')
    assert cli("silence", "add", "--server", "192.0.2.0/24", "--reason", "pool", "--config", str(config)).exit_code == 0
    assert silences.exists(), "the command did not use the config's silences_file"
    listed = cli("silence", "list", "--config", str(config), "--format", "csv").output
    assert "server=192.0.2.0/24" in listed and "config,allow,host=10.0.0.123" in listed, listed


HAND_EDITED = Path(__file__).resolve().parents[1] / "cases" / "silences-hand-edited"


@pytest.mark.parametrize("duration", ["inf", "nan", "-5m", "0", "1e300"])
def test_silence_add_refuses_non_finite_negative_zero_and_huge_durations(tmp_path, duration):
    path = tmp_path / "s.json"
    done = cli("silence", "add", "--host", "10.0.0.1", "--for", duration, "--reason", "x", "--file", str(path))
    assert done.exit_code == 2 and "a duration must be above 0" in done.output, done.output
    assert not path.exists(), "a refused silence was saved"


def test_trailing_comma_in_silences_file_is_a_clear_error_naming_file_and_line(tmp_path):
    path = tmp_path / "trailing-comma.json"
    shutil.copy(HAND_EDITED / "trailing-comma.json", path)
    expected = json.loads((HAND_EDITED / "expected.json").read_text())["trailing-comma.json"]
    for args in (["list"], ["add", "--host", "10.0.0.9", "--reason", "x"], ["remove", "aaaa1111"]):
        done = CliRunner().invoke(main, ["silence", *args, "--file", str(path)])
        assert done.exit_code == 1 and expected["error"] in done.output, f"silence {args[0]}: {done.output}"
        assert done.exception is None or isinstance(done.exception, SystemExit), f"silence {args[0]} raised"
    assert path.read_bytes() == (HAND_EDITED / "trailing-comma.json").read_bytes(), "the broken file was rewritten"


def test_silence_list_shows_good_entries_and_names_each_unusable_one(tmp_path):
    path = tmp_path / "bad-entries.json"
    shutil.copy(HAND_EDITED / "bad-entries.json", path)
    expected = json.loads((HAND_EDITED / "expected.json").read_text())["bad-entries.json"]
    done = CliRunner().invoke(main, ["silence", "list", "--file", str(path)])
    assert done.exit_code == 0, done.output
    for rule_id in expected["kept"]:
        assert rule_id in done.output
    for entry in expected["skipped"]:
        assert f"{entry} skipped" in done.output, done.output
    added = cli("silence", "add", "--host", "10.0.0.9", "--reason", "x", "--file", str(path))
    assert added.exit_code == 0, added.output
    assert cli("silence", "list", "--file", str(path)).exit_code == 0, "silence list failed after an add"


def test_running_sink_keeps_its_silences_when_the_file_is_broken_by_hand(tmp_path, http_receiver):
    silences = tmp_path / "silences.json"
    s = sink(tmp_path, [{"kind": "webhook", "url": http_receiver.url}])
    cli("silence", "add", "--host", "10.1.2.3", "--reason", "known", "--file", str(silences))
    s.write(scored([finding(host="10.1.2.3", rule="rule.a")]))
    silences.write_text(silences.read_text().rstrip().removesuffix("]").rstrip() + ",\n]\n")
    s.write(scored([finding(host="10.1.2.3", rule="rule.a"), finding(host="10.9.0.1", rule="rule.a")],
                   start=1_700_000_060.0))
    s.close()
    assert [r.json()["host"] for r in http_receiver.received] == ["10.9.0.1"], "the old silence was not kept"
    assert health.snapshot()["alerts.silences.unreadable"] == 1
    assert health.snapshot()["alerts.silenced"] == 2
