"""``netmon hosts --top N``: the hosts with the highest scores in the embedded store."""

from __future__ import annotations

import click

from netmon.report.hosts import HOST_COLUMNS
from netmon.report.listing import emit, format_option, plural
from netmon.sinks.store import DEFAULT_PATH, StoreError, open_reader


@click.command("hosts")
@click.option("--top", "top", type=int, default=20, show_default=True, help="hosts to list")
@click.option("--db", type=click.Path(dir_okay=False), help=f"store file (default: the config's store, or {DEFAULT_PATH})")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config naming the store")
@format_option
def command(top: int, db: str | None, config_path: str | None, fmt: str) -> None:
    """List the worst hosts in the store, with findings and the strongest reason."""
    try:
        with open_reader(db, config_path) as reader:
            rows = reader.top_hosts(top)
            where = reader.path
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if not rows and fmt == "table":
        click.echo(f"{where}: no host-intervals stored yet", err=True)
        return
    emit(rows, HOST_COLUMNS, fmt, title=f"Top {plural(len(rows), 'host')} ({where})")
