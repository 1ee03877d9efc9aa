"""``netmon evidence HOST``: the evidence report for one host, from the embedded store.

Writes report.html (one self-contained page, the plot inside), report.md,
rate.png, report.pdf with ``--pdf`` (headless Chromium), and excerpt.pcap when the
host's packets are at hand (replayed captures still on disk, or the pcap the live
collector kept for a flagged host) into ``--out``: by default
``<evidence dir>/<host>/``, the directory ``netmon serve`` publishes at the URL
alerts carry (``evidence_url``).
"""

from __future__ import annotations

import click

from netmon.config import ConfigError
from netmon.sinks.store import DEFAULT_PATH, StoreError, open_reader


@click.command("evidence")
@click.argument("host")
@click.option("--since", help="ISO 8601 time (UTC) or a duration before the host's last interval, e.g. 6h")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="report directory (default: the evidence directory of --config, else evidence/ in the data directory, + /HOST)")
@click.option("--db", type=click.Path(dir_okay=False), help=f"store file (default: the config's store, or {DEFAULT_PATH})")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config naming the store and the evidence directory")
@click.option("--pdf", is_flag=True, help="also print report.pdf with headless Chromium")
def command(host: str, since: str | None, out_dir: str | None, db: str | None, config_path: str | None, pdf: bool) -> None:
    """Write the evidence report for HOST (HTML with the plot inside, Markdown, pcap excerpt)."""
    from netmon.report.evidence import write_report
    from netmon.sinks.evidence import locate

    try:
        with open_reader(db, config_path) as reader:
            store = reader.path
        where = locate(config_path, host)
    except (StoreError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        report = write_report(store, host, out_dir or where.directory, since, packets=where.packets, pdf=pdf)
    except (StoreError, LookupError, RuntimeError) as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"{report.html}\n{report.markdown}\n{report.plot}")
    if report.pdf:
        click.echo(str(report.pdf))
    if report.pcap:
        click.echo(f"{report.pcap} ({report.evidence.excerpt.packets} packets)")
