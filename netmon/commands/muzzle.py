"""``netmon muzzle list|add|remove``: rate-limit or drop one host's UDP/123 with nftables.

A dry run (the nft commands are printed, nothing changes) unless the alerts sink's
``[sinks.muzzle] enabled = true`` in ``--config``. Run it on the border box; to act
inside a network namespace, run it under ``ip netns exec NAME netmon muzzle ...``.
"""

from __future__ import annotations

import dataclasses
import math

import click

from netmon.act.muzzle import Muzzle, MuzzleError
from netmon.config import ConfigError, load
from netmon.report.listing import Column, emit, format_option, plural
from netmon.sinks.alerts import configured
from netmon.sinks.alerts.silences import parse_duration


def _muzzle(config: str | None) -> Muzzle:
    """The muzzle of ``config``'s alerts sink, knowing its campus prefixes (none without a config)."""
    try:
        campus = load(config).campus.internal if config else []
        return Muzzle(configured(config).muzzle, campus)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _report(muzzle: Muzzle) -> None:
    if muzzle.dry_run:
        click.echo("dry run (set [sinks.muzzle] enabled = true to act); would run:", err=True)
        for script in muzzle.planned:
            click.echo(script.rstrip())


config_option = click.option("--config", type=click.Path(dir_okay=False), help="netmon config (muzzle settings)")


@click.group("muzzle")
def command() -> None:
    """Rate-limit or drop a host's NTP in the kernel (nftables), with expiry and audit log."""


MUZZLE_COLUMNS = (
    Column("host", "host"),
    Column("limit", "UDP/123", justify="right"),
    Column("expires_in", "seconds left", fmt="{:.0f}", justify="right"),
    Column("reason", "reason", text=True),
    Column("rate", "packets/s", priority=1, fmt="{:g}", justify="right"),
)


@command.command("list")
@config_option
@format_option
def list_(config: str | None, fmt: str) -> None:
    """Muzzled hosts: host, packets/s let through (0 = dropped), seconds left, reason."""
    muzzle = _muzzle(config)
    try:
        if not muzzle.dry_run:
            muzzle.sweep()
        records = [{**dataclasses.asdict(item), "limit": f"{item.rate:g}/s" if item.rate else "drop"}
                   for item in muzzle.list()]
    except MuzzleError as exc:
        raise click.ClickException(str(exc)) from None
    emit(records, MUZZLE_COLUMNS, fmt, title=f"{plural(len(records), 'host')} muzzled")


@command.command("add")
@click.argument("host")
@click.option("--rate", type=float, default=None, help="packets/s let through, above 0 (default from config: 0 = drop)")
@click.option("--drop", is_flag=True, help="let nothing through (whatever the config's default rate)")
@click.option("--for", "duration", default=None, help="expiry, e.g. 30m, 2h (default from config: 1h)")
@click.option("--reason", default="", help="why (audit log, nft comment)")
@click.option("--force", is_flag=True, help="muzzle an address outside the campus prefixes too")
@config_option
def add(host: str, rate: float | None, drop: bool, duration: str | None, reason: str, force: bool,
        config: str | None) -> None:
    """Muzzle HOST's UDP/123 (a host, or a prefix no wider than the config allows, inside the campus)."""
    if rate is not None and (drop or not (math.isfinite(rate) and rate > 0)):
        raise click.BadParameter(f"{rate!r}: give packets/s let through as a number above 0, or --drop alone",
                                 param_hint="--rate")
    muzzle = _muzzle(config)
    try:
        seconds = parse_duration(duration) if duration else None
        item = muzzle.add(host, rate=0.0 if drop else rate, duration=seconds, reason=reason, force=force)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except MuzzleError as exc:
        raise click.ClickException(str(exc)) from None
    _report(muzzle)
    what = f"held to {item.rate:g} packets/s" if item.rate else "dropped"
    click.echo(f"{item.host}: UDP/123 {what} for {item.expires_in:.0f}s")


@command.command("remove")
@click.argument("host")
@click.option("--reason", default="", help="why (audit log)")
@config_option
def remove(host: str, reason: str, config: str | None) -> None:
    """Lift the muzzle on HOST."""
    muzzle = _muzzle(config)
    try:
        found = muzzle.remove(host, reason=reason)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except MuzzleError as exc:
        raise click.ClickException(str(exc)) from None
    _report(muzzle)
    click.echo(f"{host}: " + ("muzzle removed" if found else "was not muzzled"))
