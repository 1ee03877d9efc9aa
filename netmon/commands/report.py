"""``netmon report HOST``: one host's intervals and findings from the embedded store."""

from __future__ import annotations

import click

from netmon.report.hosts import console, host_findings_table, intervals_table, when
from netmon.sinks.store import DEFAULT_PATH, StoreError, StoreReader


@click.command("report")
@click.argument("host")
@click.option("--db", type=click.Path(dir_okay=False), default=DEFAULT_PATH, show_default=True, help="store file")
@click.option("--last", type=int, default=60, show_default=True, help="latest intervals to show")
def command(host: str, db: str, last: int) -> None:
    """Show HOST's latest intervals (features) and every finding with its evidence."""
    try:
        with StoreReader(db) as reader:
            intervals = reader.host_intervals(host, limit=last)
            findings = reader.host_findings(host)
            inputs = reader.inputs()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if not intervals and not findings:
        raise click.ClickException(f"{host}: not in {db} (hosts are stored as addresses, or IPv6 /64 prefixes)")
    out = console()
    out.print(intervals_table(host, intervals))
    if findings:
        out.print(host_findings_table(host, findings))
    else:
        out.print(f"{host}: no findings")
    for item in inputs:
        if findings and item["first"] <= findings[-1]["end"] and item["last"] >= findings[0]["start"]:
            out.print(f"packets: {item['path']} ({when(item['first'])} to {when(item['last'])})")
