"""``netmon silence add|list|remove``: mute alerts for hosts, prefixes or servers, with a reason.

Silences (and allowlist entries, ``--allow``) are kept in a small JSON file the
alerts sink re-reads when it changes (the ``silences_file`` of the alerts sink in
``--config``, else ``silences.json`` in the data directory, :func:`netmon.paths.data_dir`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from netmon.config import ConfigError
from netmon.report.listing import Column, emit, format_option, plural, when
from netmon.sinks.alerts import configured, default_silences
from netmon.sinks.alerts.silences import Rule, SilencesFileError, check_address, parse_duration, read_file, save_file


def _file(config: str | None, path: str | None) -> Path:
    if path:
        return Path(path)
    try:
        return Path(configured(config).silences_file or default_silences())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _when(t: float | None) -> str:
    return "never" if t is None else when(t) + " UTC"


def _read(target: Path) -> list[Rule]:
    """The file's usable rules; each unusable entry named on stderr; an unreadable file a clear error."""
    try:
        rules, problems = read_file(target)
    except SilencesFileError as exc:
        raise click.ClickException(str(exc)) from None
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    return rules


file_options = [
    click.option("--config", "config", type=click.Path(dir_okay=False), help="take the silences file from this config"),
    click.option("--file", "path", type=click.Path(dir_okay=False), help="silences file (default: the config's, else silences.json in the data directory)"),
]


def with_file(func):
    for option in reversed(file_options):
        func = option(func)
    return func


@click.group("silence")
def command() -> None:
    """Silence alerts (or allowlist hosts) with an expiry and a reason."""


@command.command("add")
@click.option("--host", default="", help="exact host address (or IPv6 /64 host key)")
@click.option("--prefix", default="", help="every host inside this prefix")
@click.option("--server", default="", help="findings about this server address or prefix")
@click.option("--for", "duration", default="", help="how long, e.g. 2h, 1d (default: until removed)")
@click.option("--reason", required=True, help="why; shown in the list and the audit trail")
@click.option("--allow", is_flag=True, help="an allowlist entry (known good) rather than a silence")
@with_file
def add(host: str, prefix: str, server: str, duration: str, reason: str, allow: bool, config: str | None, path: str | None) -> None:
    """Add a silence; prints its id."""
    try:
        for value in (host, prefix, server):
            check_address(value)
        expires = time.time() + parse_duration(duration) if duration else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not (host or prefix or server):
        raise click.UsageError("give --host, --prefix or --server")
    if not reason.strip():
        raise click.BadParameter("--reason must say why")
    target = _file(config, path)
    rule = Rule(kind="allow" if allow else "silence", reason=reason, host=host, prefix=prefix, server=server, expires=expires)
    save_file(target, [*_read(target), rule])
    click.echo(f"{rule.id}\t{rule.kind} until {_when(expires)}\t{target}")


SILENCE_COLUMNS = (
    Column("id", "id"),
    Column("kind", "kind"),
    Column("match", "match"),
    Column("expires", "until (UTC)", time=True, missing="never"),
    Column("reason", "reason", text=True),
    Column("state", "state", priority=1),
    Column("origin", "from", priority=2),
)


@command.command("list")
@click.option("--all", "show_all", is_flag=True, help="include expired entries")
@with_file
@format_option
def list_(show_all: bool, config: str | None, path: str | None, fmt: str) -> None:
    """List silences: id, kind, match, expiry, reason (with --config, its entries too)."""
    now = time.time()
    rules = _read(_file(config, path))
    if config:
        table = configured(config)
        rules += [r.rule("silence") for r in table.silences] + [r.rule("allow") for r in table.allowlist]
    records = [{
        "id": rule.id if rule.origin != "config" else "config", "kind": rule.kind,
        "match": " ".join(f"{k}={v}" for k, v in (("host", rule.host), ("prefix", rule.prefix), ("server", rule.server)) if v),
        "expires": rule.expires, "reason": rule.reason, "state": "active" if rule.active(now) else "expired",
        "origin": rule.origin,
    } for rule in rules if rule.active(now) or show_all]
    emit(records, SILENCE_COLUMNS, fmt, title=plural(len(records), "silence"))


@command.command("remove")
@click.argument("ids", nargs=-1, required=True)
@with_file
def remove(ids: tuple[str, ...], config: str | None, path: str | None) -> None:
    """Remove silences by id (also drops expired entries from the file)."""
    target = _file(config, path)
    rules = _read(target)
    now = time.time()
    kept = [r for r in rules if r.id not in ids and r.active(now)]
    missing = set(ids) - {r.id for r in rules}
    save_file(target, kept)
    for rule_id in missing:
        click.echo(f"no silence with id {rule_id}", err=True)
    if missing:
        sys.exit(1)
