"""What a newcomer following README.md and deploy/samples/README.md meets, command by command."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from netmon.cli import main
from tests.decode import builders
from tests.fuzz import seeds

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "deploy" / "samples"


def _commands(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, click.Context(command, parent=ctx), (*prefix, name))


COMMANDS = list(_commands(main, click.Context(main)))


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_every_command_and_subcommand_prints_its_help(argv: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*argv, "--help"], prog_name="netmon")
    assert result.exit_code == 0 and result.exception is None, f"netmon {' '.join(argv)} --help: {result.output}"
    assert result.output.startswith(f"Usage: netmon {' '.join(argv)}"), result.output


def test_evaluate_on_the_shipped_sample_meets_its_bar_instead_of_an_impossible_one(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample's runaway already runs 24 daemons at its first packet: 'detected by daemon 4'
    cannot be met and printed MISSED beside a detection in the first minute. It is a cold start."""
    monkeypatch.setenv("NETMON_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["evaluate", "--labels", str(SAMPLES / "campus-runaway.labels.jsonl"),
                                       str(SAMPLES / "campus-runaway.pcap.gz")])
    assert result.exit_code == 0, result.output
    assert "MISSED" not in result.output and "flagged by 4 daemons" not in result.output, result.output
    assert "incident detected within 2 intervals (already" in result.output, result.output


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the directory to another user")
def test_silence_added_as_root_stays_readable_by_the_service_that_owns_the_directory(tmp_path: Path) -> None:
    """systemd's DynamicUser owns /var/lib/netmon; `netmon silence add` run as root made a
    root-only 0600 file there that the service could not read."""
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    silences = state / "silences.json"
    added = CliRunner().invoke(main, ["silence", "add", "--host", "10.20.3.64", "--reason", "NAT gateway",
                                      "--file", str(silences)])
    assert added.exit_code == 0, added.output
    made = silences.stat()
    assert (made.st_uid, made.st_gid, stat.S_IMODE(made.st_mode)) == (65534, 65534, 0o640), \
        f"new silences file {made.st_uid}:{made.st_gid} {stat.S_IMODE(made.st_mode):o}"
    silences.chmod(0o600)
    again = CliRunner().invoke(main, ["silence", "add", "--host", "10.20.3.65", "--reason", "lab", "--file", str(silences)])
    assert again.exit_code == 0, again.output
    kept = silences.stat()
    assert (kept.st_uid, stat.S_IMODE(kept.st_mode)) == (65534, 0o600), "rewriting changed the file's owner or mode"


def test_decode_of_a_capture_with_no_ntp_it_can_read_says_why(tmp_path: Path) -> None:
    """A capture of a link type netmon does not decode printed nothing and exited 0."""
    packets = seeds.frames_by_linktype()[1]
    capture = tmp_path / "radio.pcap"
    capture.write_bytes(builders.pcap_bytes(packets, linktype=127))  # 802.11 radiotap
    result = CliRunner().invoke(main, ["decode", str(capture)])
    assert result.exit_code == 0, result.output
    assert f"{capture}: {len(packets)} frames, no NTP packet among them (skipped: unknown_linktype {len(packets)})" \
        in result.output, result.output
