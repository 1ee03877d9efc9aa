"""`netmon check-config` asks the influx and metrics sinks whether they can run."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from netmon.sinks import influx, metrics
from tests.influx.data import make_run, recent_start
from tests.influx.servers import Influx1, free_port
from tests.influx.writing import write_all

NETMON = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "netmon"


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
    assert problems and "cannot read the credential file" in problems[0] and problems[0].count("credential") == 1, problems
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
    good.write_text(f'[campus]\ninternal = ["10.20.0.0/16"]\n'
                    f'[[sources]]\ntype = "netflow"\nlisten = ["127.0.0.1:{free_port()}"]\n'
                    f'[[sinks]]\ntype = "influx"\nurl = "{victoria.url}"\ntoken_file = "{token}"\n'
                    f'spool_dir = "{tmp_path / "spool"}"\n'
                    f'[[sinks]]\ntype = "metrics"\nlisten = "127.0.0.1:{free_port()}"\n')
    result = subprocess.run([str(netmon), "check-config", str(good)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace(victoria.url, f"http://127.0.0.1:{free_port()}"))
    result = subprocess.run([str(netmon), "check-config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "sinks[0] (influx): no answer from" in result.stderr, result.stderr


@pytest.fixture
def bare_influx1(tmp_path):
    """influxd 1.x without any database (the fixture influx1 creates netmon)."""
    if not shutil.which("influxd"):
        pytest.skip("influxd (Debian package influxdb) is not installed: bash deploy/install.sh --all")
    (tmp_path / "influxd").mkdir()
    server = Influx1.create(tmp_path / "influxd", auth=True)
    server.start()
    server.admin("CREATE USER admin WITH PASSWORD 'adm1n-pw' WITH ALL PRIVILEGES")
    server.auth = ("admin", "adm1n-pw")
    yield server
    server.stop()


def databases(server: Influx1) -> set[str]:
    return {row[0] for s in server.series("SHOW DATABASES", db="") for row in s.get("values", [])}


def test_influx_v1_missing_database_is_created_as_telegraf_does(bare_influx1, tmp_path):
    config = influx.Config(type="influx", api="v1", url=bare_influx1.url, username="admin", password="adm1n-pw",
                           spool_dir=str(tmp_path / "spool"), flush_interval=0.05)
    assert "netmon" not in databases(bare_influx1)
    sink = influx.build(config)
    write_all(sink, make_run(recent_start(), 2))
    assert "netmon" in databases(bare_influx1)
    assert bare_influx1.series('SELECT count("requests") FROM "ntp_traffic"'), "no point arrived"


def test_influx_v1_database_that_cannot_be_created_stops_the_start_with_the_fix(bare_influx1, tmp_path):
    bare_influx1.admin("CREATE USER writer WITH PASSWORD 'wr1ter-pw'")
    writer = dict(type="influx", api="v1", url=bare_influx1.url, username="writer", password="wr1ter-pw",
                  spool_dir=str(tmp_path / "spool"))
    with pytest.raises(influx.DatabaseError, match=r"does not exist .*cannot be created .*requires admin.*"
                                                   r"CREATE DATABASE \"netmon\".*GRANT WRITE"):
        influx.build(influx.Config(**writer))
    with pytest.raises(influx.DatabaseError, match="skip_database_creation = true"):
        influx.build(influx.Config(**(writer | {"username": "admin", "password": "adm1n-pw",
                                                "skip_database_creation": True})))
    assert "netmon" not in databases(bare_influx1)


def test_check_config_reports_a_missing_influx_database_and_a_missing_grant(bare_influx1, tmp_path):
    bare_influx1.admin("CREATE USER writer WITH PASSWORD 'wr1ter-pw'")
    writer = dict(type="influx", api="v1", url=bare_influx1.url, username="writer", password="wr1ter-pw",
                  spool_dir=str(tmp_path / "spool"))
    problems = influx.check(influx.Config(**writer))
    assert any("does not exist" in p and "not an admin" in p for p in problems), problems
    assert influx.check(influx.Config(**(writer | {"username": "admin", "password": "adm1n-pw"}))) == [], (
        "an admin may create the missing database: nothing to report")
    bare_influx1.create_database("netmon")
    problems = influx.check(influx.Config(**writer))
    assert any("may not write" in p and 'GRANT WRITE ON "netmon" TO "writer"' in p for p in problems), problems
    bare_influx1.admin('GRANT WRITE ON "netmon" TO "writer"')
    assert influx.check(influx.Config(**writer)) == []
    problems = influx.check(influx.Config(**(writer | {"password": "wrong"})))
    assert any("refuses the credentials" in p for p in problems) and not any("wrong" in p for p in problems)


def test_replay_into_a_database_that_cannot_be_created_fails_with_one_line_not_exit_0(bare_influx1, tmp_path):
    """The issue: a replay retried 404s, exited 0 and left every point in the spool."""
    sample = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "campus-runaway.pcap.gz"
    config = tmp_path / "netmon.toml"
    config.write_text(f'[campus]\ninternal = ["10.20.0.0/16"]\n[detect]\ncheckpoint = "{tmp_path / "state.ckpt"}"\n'
                      f'[[sinks]]\ntype = "influx"\napi = "v1"\nurl = "{bare_influx1.url}"\nusername = "admin"\n'
                      f'password = "adm1n-pw"\nskip_database_creation = true\nspool_dir = "{tmp_path / "spool"}"\n')
    result = subprocess.run([str(NETMON), "replay", str(sample), "--config", str(config)], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0, f"replay exited 0:\n{result.stdout[-1000:]}"
    assert "database 'netmon' does not exist" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "adm1n-pw" not in result.stdout + result.stderr


def test_influx_v1_database_dropped_while_running_is_created_again_and_nothing_is_stranded(bare_influx1, tmp_path):
    """A 404 from /write (database gone) creates the database and sends again, instead of
    retrying the 404 forever with the points left in the spool."""
    config = influx.Config(type="influx", api="v1", url=bare_influx1.url, username="admin", password="adm1n-pw",
                           spool_dir=str(tmp_path / "spool"), flush_interval=0.05, retry_initial=0.05,
                           retry_max=0.2)
    sink = influx.build(config)
    bare_influx1.admin('DROP DATABASE "netmon"')
    run = make_run(recent_start(), 3)
    write_all(sink, run)
    assert sink.spool.pending_points() == 0, "points stranded in the spool"
    stored = bare_influx1.series('SELECT count("requests") FROM "ntp_traffic"')
    assert stored and stored[0]["values"][0][1] == 2 * 5 * len(run)


def test_a_credential_file_that_is_not_utf8_is_named_without_a_byte_of_it(tmp_path):
    """It raised UnicodeDecodeError, whose message quotes a byte of the secret and where it is."""
    token = tmp_path / "token"
    token.write_bytes(b"t0k\xe9n-S3CRET\n")
    config = influx.Config(type="influx", url=f"http://127.0.0.1:{free_port()}", token_file=str(token),
                           spool_dir=str(tmp_path / "s"))
    problems = influx.check(config)
    assert problems == [f"cannot read the credential file {token}: it is not UTF-8 text"], problems
    with pytest.raises(influx.CredentialError) as raised:
        influx.build(config)
    assert str(raised.value) == f"influx sink: {problems[0]}", "the start does not name the sink and the file"
    for text in (*problems, str(raised.value)):
        assert "S3CRET" not in text and "0xe9" not in text and "position" not in text, text


def test_credentials_in_the_url_are_not_echoed_when_the_database_refuses_them(bare_influx1, tmp_path):
    url = bare_influx1.url.replace("://", "://writer:wr0ng-pw-in-url@")
    problems = influx.check(influx.Config(type="influx", api="v1", url=url, spool_dir=str(tmp_path / "spool")))
    assert any("refuses the credentials" in p for p in problems), problems
    assert not any("wr0ng-pw-in-url" in p for p in problems), f"a password in the URL was printed: {problems}"
