"""``netmon evidence HOST``: the evidence report for one host, from the embedded store.

Writes report.md, report.html, rate.png and (when the host's packets came from
replayed captures still on disk) excerpt.pcap into ``--out`` (default
``netmon-data/evidence/<host>/``, the path an alert's ``evidence_url`` can name
with ``{host}``).
"""

from __future__ import annotations

import click

from netmon.sinks.alerts.model import host_slug
from netmon.sinks.store import DEFAULT_PATH, StoreError


@click.command("evidence")
@click.argument("host")
@click.option("--since", help="ISO 8601 time (UTC) or a duration before the host's last interval, e.g. 6h")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="report directory (default netmon-data/evidence/HOST)")
@click.option("--db", default=DEFAULT_PATH, show_default=True, type=click.Path(dir_okay=False), help="embedded store")
def command(host: str, since: str | None, out_dir: str | None, db: str) -> None:
    """Write the evidence report for HOST (Markdown, HTML, PNG plot, pcap excerpt)."""
    from netmon.report.evidence import write_report

    target = out_dir or f"netmon-data/evidence/{host_slug(host)}"
    try:
        report = write_report(db, host, target, since)
    except (StoreError, LookupError) as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"{report.markdown}\n{report.html}\n{report.plot}")
    if report.pcap:
        click.echo(f"{report.pcap} ({report.evidence.excerpt.packets} packets)")
