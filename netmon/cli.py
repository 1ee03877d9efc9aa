"""The one command, ``netmon``: each job lives in its own module under netmon/commands.

Commands load lazily so ``netmon --help`` stays instant (it lists the one-line
summaries below without importing any command) and a replay never imports what
only a live collector needs.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
from typing import Any

import click


#: command name -> (module in netmon.commands that defines ``command``, one-line summary for ``--help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("replay", "Replay capture FILEs through decode, aggregation, detection and the sinks."),
    "run": ("run", "Run the live sources of CONFIG until stopped (SIGINT/SIGTERM); SIGHUP reloads."),
    "decode": ("decode", "Print the NTP packets in capture FILEs (pcap, pcapng, gzip-compressed)."),
    "hosts": ("hosts", "List the worst hosts in the store, with findings and the strongest reason."),
    "report": ("report", "Show HOST's latest intervals and a summary of its findings."),
    "simulate": ("simulate", "Simulate campus NTP traffic with labelled anomalies: a pcap and its labels."),
    "evaluate": ("evaluate", "Score the detectors against labelled traffic: recall, precision, time to detect."),
    "evidence": ("evidence", "Write the evidence report for HOST (HTML with the plot inside, Markdown, pcap excerpt)."),
    "serve": ("serve", "Serve the evidence reports read-only over HTTP, at the URL alerts carry."),
    "silence": ("silence", "Silence alerts (or allowlist hosts) with an expiry and a reason."),
    "muzzle": ("muzzle", "Rate-limit or drop a host's NTP in the kernel (nftables), with expiry."),
    "check-config": ("check_config", "Check CONFIG (TOML) before running: keys, values, hooks, interfaces."),
    "cleanup": ("cleanup", "Find and remove netmon's leftover eBPF filters and pinned maps."),
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs or shows its own help.

    Start-up (the command's imports: numpy, pydantic's validators, structlog, the pipeline)
    makes tens of thousands of objects that live as long as the process and frees almost
    none, so the cyclic garbage collector's ~120 passes over them find ~1,000 objects and
    cost a replay's start-up 0.02-0.04 CPU-s. It is paused until the command is resolved and
    imported; what start-up made is then frozen (never scanned again; the cycles it left,
    ~1,000 objects or 0.6 MB for a replay, are kept for the process's life) and collection
    resumes (``main``) before the command runs.

    At exit whatever is left is frozen too: the interpreter's last collections would walk every
    object once more (~0.07 CPU-s) only to free memory the process is returning anyway. Objects
    are still released by reference counting as modules are cleared: only garbage held in
    reference cycles is left, unfinalized, to the operating system.

    numpy's OpenBLAS starts a thread per core when numpy is imported (0.02-0.03 CPU-s here on
    2 cores, more on a big server) for matrix products that netmon's per-batch arrays never
    make big enough to share: unless ``OPENBLAS_NUM_THREADS`` is set, it gets one.
    """

    paused = False

    def main(self, *args: Any, **kwargs: Any) -> Any:
        atexit.unregister(gc.freeze)  # once, however often a caller in the same process runs netmon
        atexit.register(gc.freeze)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # read when numpy is first imported
        self.paused = gc.isenabled()
        gc.disable()
        try:
            return super().main(*args, **kwargs)
        finally:
            self.resume()
            gc.unfreeze()  # a caller in the same process (a test) collects as before

    def resume(self) -> None:
        """Start-up is over: freeze what it made and collect again, so a command that runs for
        months never runs without the collector."""
        if self.paused:
            self.paused = False
            gc.freeze()
            gc.enable()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name = f"netmon.commands.{COMMANDS[name][0]}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netmon")
def main() -> None:
    """netmon: find campus hosts that misbehave on NTP (UDP/123), with evidence."""
    from netmon import logs

    logs.configure()
    group = click.get_current_context().command
    if isinstance(group, LazyGroup):
        group.resume()  # the command is imported
