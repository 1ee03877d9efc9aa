"""`netmon check-config` asks the influx and metrics sinks whether they can run."""

from __future__ import annotations

import socket

from netmon.sinks import influx, metrics
from tests.influx.servers import free_port


def test_reachable_database_with_a_token_file_passes(victoria, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    config = influx.Config(type="influx", url=victoria.url, token_file=str(token), spool_dir=str(tmp_path / "s"))
    assert influx.check(config) == []


def test_missing_token_unreadable_file_and_silent_database_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv("INFLUX_TOKEN", raising=False)
    url = f"http://127.0.0.1:{free_port()}"
    problems = influx.check(influx.Config(type="influx", url=url, spool_dir=str(tmp_path)))
    assert any("no token" in p for p in problems) and any("no answer from" in p for p in problems)
    problems = influx.check(influx.Config(type="influx", url=url, token_file=str(tmp_path / "absent")))
    assert problems and "cannot read the credential file" in problems[0]
    problems = influx.check(influx.Config(type="influx", api="v1", url=url, username="writer",
                                          spool_dir=str(tmp_path)))
    assert any("without a password" in p for p in problems)


def test_metrics_port_in_use_is_named():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        problems = metrics.check(metrics.Config(type="metrics", listen=f"127.0.0.1:{port}"))
    assert problems and "cannot listen" in problems[0]
    assert metrics.check(metrics.Config(type="metrics", listen=f"127.0.0.1:{free_port()}")) == []


def test_check_config_command_reports_the_sinks_problems(victoria, tmp_path):
    import subprocess
    from pathlib import Path

    netmon = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "netmon"
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    good = tmp_path / "good.toml"
    good.write_text(f'[[sinks]]\ntype = "influx"\nurl = "{victoria.url}"\ntoken_file = "{token}"\n'
                    f'spool_dir = "{tmp_path / "spool"}"\n'
                    f'[[sinks]]\ntype = "metrics"\nlisten = "127.0.0.1:{free_port()}"\n')
    result = subprocess.run([str(netmon), "check-config", str(good)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace(victoria.url, f"http://127.0.0.1:{free_port()}"))
    result = subprocess.run([str(netmon), "check-config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "sinks[0] (influx): no answer from" in result.stderr, result.stderr
