"""``netmon report HOST``: one host's intervals and findings from the embedded store."""

from __future__ import annotations

import click

from netmon.batch import host_name
from netmon.config import ConfigError, load
from netmon.report.hosts import console, host_findings_table, intervals_table, when
from netmon.sinks.store import DEFAULT_PATH, StoreError, open_reader


def _candidates(host: str, config_path: str | None) -> list[str]:
    """The host as given, then the name it is stored under (an IPv6 address rolled up
    to the config's prefix, /64 by default)."""
    try:
        prefix = load(config_path).campus.ipv6_prefix
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return list(dict.fromkeys([host, host_name(host, prefix)]))


@click.command("report")
@click.argument("host")
@click.option("--db", type=click.Path(dir_okay=False), help=f"store file (default: the config's store, or {DEFAULT_PATH})")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config naming the store")
@click.option("--last", type=int, default=60, show_default=True, help="latest intervals to show")
def command(host: str, db: str | None, config_path: str | None, last: int) -> None:
    """Show HOST's latest intervals (features) and every finding with its evidence."""
    try:
        with open_reader(db, config_path) as reader:
            where = reader.path
            for name in _candidates(host, config_path):
                intervals = reader.host_intervals(name, limit=last)
                if intervals:
                    host = name
                    break
            findings = reader.host_findings(host)
            inputs = reader.inputs()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if not intervals and not findings:
        raise click.ClickException(f"{host}: not in {where} (hosts are stored as addresses, or IPv6 /64 prefixes)")
    out = console()
    out.print(intervals_table(host, intervals))
    if findings:
        out.print(host_findings_table(host, findings))
    else:
        out.print(f"{host}: no findings")
    for item in inputs:
        if findings and item["first"] <= findings[-1]["end"] and item["last"] >= findings[0]["start"]:
            out.print(f"packets: {item['path']} ({when(item['first'])} to {when(item['last'])})")
