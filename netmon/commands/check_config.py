"""``netmon check-config``: validate a config, and ask each plug-in whether it can run.

Validation names each bad key and what is allowed; then every source and sink reports
its problems by its ``check(config) -> list[str]`` (a hook URL that is malformed, an
executable that is missing, an interface that does not exist, a port in use),
before anything starts.
"""

from __future__ import annotations

import sys

import click

from netmon import registry
from netmon.config import ConfigError, Settings, load
from netmon.paths import creatable


def problems(path: str | None) -> list[str]:
    """Every reason the config at ``path`` cannot run; empty when it can."""
    try:
        settings = load(path)
    except ConfigError as exc:
        return [str(exc)]
    found = run_problems(settings)
    for kind, tables in (("source", settings.sources), ("sink", settings.sinks)):
        for index, config in enumerate(tables):
            where = f"{kind}s[{index}] ({config.type})"
            try:
                found.extend(f"{where}: {problem}" for problem in registry.check(kind, config))
            except (OSError, ValueError) as exc:  # a path the OS refuses to look at (too long...)
                found.append(f"{where}: cannot be checked: {getattr(exc, 'strerror', None) or exc}")
    return found


def run_problems(settings: Settings) -> list[str]:
    """What keeps a valid config from doing anything in ``netmon run``: an empty config is
    valid TOML and valid settings, yet it reads nothing and judges no host."""
    found = []
    if not settings.sources:
        found.append('no [[sources]]: `netmon run` would read nothing; add one, e.g. [[sources]] type = "capture", '
                     'interface = "eth1" (netmon replay brings its own files)')
    if settings.detect.checkpoint:  # the models' state, saved while running: a file in the way loses it
        found += creatable(settings.detect.checkpoint, "detect.checkpoint")
    if not settings.campus.internal:
        found.append('campus.internal is empty: no host is "ours", so none would be scored; add the campus '
                     'prefixes, e.g. internal = ["10.0.0.0/8", "2001:db8::/32"]')
    return found


@click.command("check-config")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
def command(config: str | None) -> None:
    """Check CONFIG (TOML) before running: keys, values, hooks, interfaces."""
    found = problems(config)
    for problem in found:
        click.echo(problem, err=True)
    if found:
        sys.exit(2)
    click.echo(f"{config or 'default settings'}: OK")
