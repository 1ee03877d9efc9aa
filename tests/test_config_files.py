"""Config files and start-up faults (unreadable config, busy ports): one clear line, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

NETMON = str(Path(sys.executable).with_name("netmon"))
CASE = Path(__file__).resolve().parent / "cases" / "config-not-utf8" / "netmon.toml"
SAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "samples" / "campus-runaway.pcap.gz"


@pytest.mark.parametrize("argv", [["check-config", str(CASE)], ["run", "--config", str(CASE)],
                                  ["replay", "--config", str(CASE), str(SAMPLE)]], ids=lambda a: a[0])
def test_non_utf8_config_is_a_one_line_error(argv):
    done = subprocess.run([NETMON, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "UnicodeDecodeError" not in done.stderr, done.stderr
    assert f"{CASE}: not UTF-8 text (byte offset 17); a TOML config must be UTF-8" in done.stderr, done.stderr


def test_config_that_cannot_be_read_is_a_config_error_naming_it(tmp_path):
    from netmon.config import ConfigError, load

    with pytest.raises(ConfigError, match=f"{tmp_path}: cannot read the config: Is a directory"):
        load(tmp_path)


@pytest.mark.parametrize("source", ["netflow", "sflow"])
def test_busy_listen_port_is_a_one_line_error_and_check_config_reports_it(tmp_path, source):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        config = tmp_path / "netmon.toml"
        config.write_text(f'[campus]\ninternal = ["10.0.0.0/8"]\n[[sources]]\ntype = "{source}"\n'
                          f'listen = ["127.0.0.1:{port}"]\n[[sinks]]\ntype = "store"\npath = "{tmp_path}/n.db"\n')
        expected = f"{source} source cannot listen on 127.0.0.1:{port}: Address already in use"
        ran = subprocess.run([NETMON, "run", "--config", str(config)], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 2 and expected in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
        checked = subprocess.run([NETMON, "check-config", str(config)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 2 and expected in checked.stderr, checked.stderr


UNWRITABLE = Path(__file__).resolve().parent / "cases" / "unwritable-paths"


def test_unwritable_paths_are_named_by_check_config_and_stop_replay_in_one_line(tmp_path):
    (tmp_path / "blocker").write_text("a plain file where netmon wants directories")
    config = tmp_path / "netmon.toml"
    config.write_text((UNWRITABLE / "netmon.toml").read_text().replace("{dir}", str(tmp_path)))
    expected = json.loads((UNWRITABLE / "expected.json").read_text().replace("{dir}", str(tmp_path)))
    checked = subprocess.run([NETMON, "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == expected["check_config_exit"], checked.stderr
    for line in expected["check_config_names"]:
        assert line in checked.stderr.splitlines(), f"check-config did not say {line!r}:\n{checked.stderr}"
    ran = subprocess.run([NETMON, "replay", "--config", str(config), str(SAMPLE)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert ran.returncode == expected["replay_exit"], ran.stderr
    assert "Traceback" not in ran.stderr and "FileNotFoundError" not in ran.stderr, ran.stderr
    assert f"Error: {expected['replay_error']}" in ran.stderr, ran.stderr


def test_an_existing_path_of_the_wrong_kind_is_named_by_check_config(tmp_path):
    from netmon.paths import creatable

    a_file, a_dir = tmp_path / "evidence", tmp_path / "netmon.ckpt"
    a_file.write_text("")
    a_dir.mkdir()
    assert creatable(a_file, "dir", directory=True) == [f"dir {a_file}: is not a directory"]
    assert creatable(a_dir, "detect.checkpoint") == [f"detect.checkpoint {a_dir}: is a directory"]
    assert creatable(a_dir, "dir", directory=True) == [] and creatable(a_file, "store") == []
