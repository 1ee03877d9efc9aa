"""The exec hook runs a real program: argv from config, JSON on stdin, NETMON_* in env."""

from __future__ import annotations

import json
import os
import stat
import sys

import netmon.sinks.alerts as alerts
from netmon import health
from tests.alerts.receivers import finding, scored, wait_for
from tests.alerts.test_webhook import HOSTILE, sink


def script(tmp_path, body: str):
    path = tmp_path / "hook.py"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


RECORD = """
import json, os, sys
out = sys.argv[1]
with open(out, "a") as f:
    f.write(json.dumps({"stdin": json.load(sys.stdin), "env": {k: v for k, v in os.environ.items() if k.startswith("NETMON_")}, "argv": sys.argv[1:]}) + "\\n")
sys.exit(int(os.environ.get("EXIT", "0")))
"""


def test_exec_hook_gets_alert_on_stdin_and_env_and_status_is_recorded(tmp_path):
    out = tmp_path / "calls.jsonl"
    program = script(tmp_path, RECORD)
    s = sink(tmp_path, [{"kind": "exec", "name": "rec", "argv": [str(program), str(out), "literal $(id)"]}])
    s.write(scored([finding()]))
    s.close()
    calls = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(calls) == 1, "the program ran a wrong number of times"
    call = calls[0]
    assert call["argv"] == [str(out), "literal $(id)"], "argv must reach the program unchanged, without a shell"
    assert call["stdin"]["host"] == "10.1.2.3" and call["stdin"]["version"] == "netmon.alert/1"
    env = call["env"]
    assert env["NETMON_HOST"] == "10.1.2.3" and env["NETMON_RULE"] == "rule.kod_ignored" and env["NETMON_EVENT"] == "firing"
    assert health.snapshot().get("alerts.exec.rec.exit.0") == 1


def test_hostile_explanation_is_never_run_by_a_shell(tmp_path):
    out = tmp_path / "calls.jsonl"
    marker = tmp_path / "pwned"
    hostile = HOSTILE.replace("/tmp/pwned", str(marker))
    program = script(tmp_path, RECORD)
    s = sink(tmp_path, [{"kind": "exec", "argv": [str(program), str(out)]}])
    s.write(scored([finding(explanation=hostile)]))
    s.close()
    assert not marker.exists(), "packet-derived text was executed by a shell"
    env = json.loads(out.read_text())["env"]
    assert "\n" not in env["NETMON_EXPLANATION"] and "\x00" not in env["NETMON_EXPLANATION"]
    assert "$(touch" in env["NETMON_EXPLANATION"], "the text itself is kept (as data)"


def test_nonzero_exit_is_recorded_and_retried(tmp_path):
    out = tmp_path / "calls.jsonl"
    flag = tmp_path / "ok"
    program = script(tmp_path, f"""
import os, sys
open({str(out)!r}, "a").write("x\\n")
sys.exit(0 if os.path.exists({str(flag)!r}) else 3)
""")
    s = sink(tmp_path, [{"kind": "exec", "name": "flaky", "argv": [str(program)]}])
    s.write(scored([finding()]))
    assert wait_for(lambda: health.snapshot().get("alerts.exec.flaky.exit.3", 0) >= 2), "failure was not retried"
    flag.touch()
    s.close()
    snap = health.snapshot()
    assert snap.get("alerts.exec.flaky.exit.0") == 1 and snap.get("alerts.hook.flaky.written") == 1


def test_check_names_missing_and_non_executable_programs(tmp_path):
    plain = tmp_path / "notexec"
    plain.write_text("x")
    config = alerts.Config.model_validate({"type": "alerts", "hooks": [
        {"kind": "exec", "argv": [str(tmp_path / "missing")]},
        {"kind": "exec", "argv": [str(plain)]},
        {"kind": "exec", "argv": ["no-such-program-netmon"]},
        {"kind": "exec", "argv": [sys.executable]},
    ]})
    problems = alerts.check(config)
    assert len(problems) == 3, problems
    assert "not found" in problems[0] and "not an executable" in problems[1] and "on PATH" in problems[2]
    assert os.access(sys.executable, os.X_OK)
