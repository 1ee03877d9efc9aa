"""Reading the config file: what cannot be read is one clear line, never a traceback."""

from __future__ import annotations

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
