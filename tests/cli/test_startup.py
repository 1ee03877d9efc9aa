"""Issue 14 item 1 (start-up): the garbage collector pauses while a command is resolved and
imported (start-up makes objects that live as long as the process and frees almost none), and
every command runs with it on again, what start-up made frozen; a caller in the same process
gets its collector back as it was; the exit does not walk every object again; OpenBLAS does
not start a thread per core."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import types

import click
from click.testing import CliRunner

from netmon import cli


def test_the_collector_pauses_for_imports_and_runs_again_for_the_command(monkeypatch):
    seen: dict[str, object] = {}

    @click.command("probe")
    def probe() -> None:
        seen["running"] = gc.isenabled()
        seen["frozen"] = gc.get_freeze_count()

    def load(name: str) -> types.ModuleType:
        seen["importing"] = gc.isenabled()
        return types.SimpleNamespace(command=probe)  # type: ignore[return-value]

    monkeypatch.setitem(cli.COMMANDS, "probe", ("probe", "a command that notes the collector's state"))
    monkeypatch.setattr(cli.importlib, "import_module", load)
    assert gc.isenabled()
    result = CliRunner().invoke(cli.main, ["probe"])
    assert result.exit_code == 0, result.output
    assert seen["importing"] is False, "the collector ran while the command's modules were imported"
    assert seen["running"] is True, "the command ran without the garbage collector (a service would leak cycles)"
    assert seen["frozen"] > 0, "what start-up made was not frozen: every later pass scans it again"
    assert gc.isenabled() and gc.get_freeze_count() == 0, "the caller's collector was not given back as it was"


def test_a_caller_that_had_the_collector_off_keeps_it_off():
    gc.disable()
    try:
        CliRunner().invoke(cli.main, ["--help"])
        assert not gc.isenabled(), "netmon turned on a collector its caller had turned off"
    finally:
        gc.enable()


def test_the_process_exit_does_not_walk_what_is_left_again():
    """The interpreter's last collections would walk every object once more (~0.07 CPU-s at
    the end of every command) only to free memory the process is returning anyway."""
    probe = ("import atexit, gc, sys\n"
             "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"  # runs after netmon's
             "from netmon.cli import main\n"
             "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
             "print('frozen after main:', gc.get_freeze_count() > 0)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "frozen after main: False" in done.stdout, "a caller in the same process was left with frozen objects"
    assert "frozen at exit: True" in done.stdout, "the exit's collections walk every object again"


def test_openblas_gets_one_thread_unless_the_user_chose(monkeypatch):
    """OpenBLAS starts a thread per core at numpy's import for products netmon never makes big."""
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    CliRunner().invoke(cli.main, ["--help"])
    assert os.environ.get("OPENBLAS_NUM_THREADS") == "1", "numpy's BLAS would start a thread per core"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    CliRunner().invoke(cli.main, ["--help"])
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4", "the user's own OpenBLAS setting was overridden"
