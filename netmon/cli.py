"""The one command, ``netmon``: each job lives in its own module under netmon/commands.

Commands load lazily so ``netmon --help`` stays instant and a replay never imports
what only a live collector needs.
"""

from __future__ import annotations

import importlib

import click

#: command name -> module in netmon.commands that defines ``command`` (a click command)
COMMANDS: dict[str, str] = {
    "replay": "replay",
    "run": "run",
    "decode": "decode",
    "hosts": "hosts",
    "report": "report",
    "simulate": "simulate",
    "evaluate": "evaluate",
    "evidence": "evidence",
    "silence": "silence",
    "muzzle": "muzzle",
    "check-config": "check_config",
    "cleanup": "cleanup",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        try:
            module = importlib.import_module(f"netmon.commands.{COMMANDS[name]}")
        except ModuleNotFoundError as exc:
            if exc.name == f"netmon.commands.{COMMANDS[name]}":
                return None
            raise
        return module.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netmon")
def main() -> None:
    """netmon: find campus hosts that misbehave on NTP (UDP/123), with evidence."""
