"""``netmon report HOST``: one host's latest intervals and its findings, bounded.

Shows the last ``--last`` intervals, the findings folded per detector (how many,
first and last, the worst explanation) and the latest ``--last`` single findings:
a host flagged every minute for weeks still fits a screen. ``--format json`` gives
the same parts as one object; ``--format csv`` the one part named by ``--part``.
"""

from __future__ import annotations

import json

import click

from netmon.batch import host_name
from netmon.config import ConfigError, load
from netmon.report.hosts import (FINDING_COLUMNS, INTERVAL_COLUMNS, SUMMARY_COLUMNS, detector_summary,
                                 interval_records)
from netmon.report.listing import FORMATS, as_csv, as_json, plural, table, when, width
from netmon.sinks.store import DEFAULT_PATH, StoreError, open_reader

PARTS = {"intervals": INTERVAL_COLUMNS, "summary": SUMMARY_COLUMNS, "findings": FINDING_COLUMNS}


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
@click.option("--last", type=click.IntRange(1), default=20, show_default=True,
              help="latest intervals, and latest single findings, to show")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table (fits the terminal), json (one object with every part) or csv (the --part)")
@click.option("--part", type=click.Choice(sorted(PARTS)), default="findings", show_default=True,
              help="with --format csv: which listing")
def command(host: str, db: str | None, config_path: str | None, last: int, fmt: str, part: str) -> None:
    """Show HOST's latest intervals and a summary of its findings."""
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
    parts = {"intervals": interval_records(intervals), "summary": detector_summary(findings),
             "findings": findings[-last:]}
    if fmt == "json":
        click.echo(json.dumps({"host": host, "findings_total": len(findings),
                               **{k: as_json(rows, PARTS[k]) for k, rows in parts.items()}}, indent=1))
        return
    if fmt == "csv":
        click.echo(as_csv(parts[part], PARTS[part]), nl=False)
        return
    cols = width()
    click.echo(table(parts["intervals"], INTERVAL_COLUMNS, cols, f"{host}: last {plural(len(intervals), 'interval')}"), nl=False)
    if not findings:
        click.echo(f"{host}: no findings")
        return
    click.echo(table(parts["summary"], SUMMARY_COLUMNS, cols,
                     f"{host}: {plural(len(findings), 'finding')} by detector"), nl=False)
    click.echo(table(parts["findings"], FINDING_COLUMNS, cols, f"{host}: latest {plural(len(parts['findings']), 'finding')}"), nl=False)
    for item in inputs:
        if item["first"] <= findings[-1]["end"] and item["last"] >= findings[0]["start"]:
            click.echo(f"packets: {item['path']} ({when(item['first'])} to {when(item['last'])} UTC)")
    click.echo(f"evidence report for an abuse desk: netmon evidence {host}")
