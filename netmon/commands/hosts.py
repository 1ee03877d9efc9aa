"""``netmon hosts --top N``: the hosts with the highest scores in the embedded store."""

from __future__ import annotations

import click

from netmon.report.hosts import console, top_hosts_table
from netmon.sinks.store import DEFAULT_PATH, StoreError, StoreReader


@click.command("hosts")
@click.option("--top", "top", type=int, default=20, show_default=True, help="hosts to list")
@click.option("--db", type=click.Path(dir_okay=False), default=DEFAULT_PATH, show_default=True, help="store file")
def command(top: int, db: str) -> None:
    """List the worst hosts in the store, with findings and the strongest reason."""
    try:
        with StoreReader(db) as reader:
            rows = reader.top_hosts(top)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if not rows:
        click.echo(f"{db}: no host-intervals stored yet")
        return
    console().print(top_hosts_table(rows))
