"""``netmon serve``: publish the evidence reports read-only over HTTP, at the URL alerts carry.

    netmon serve --config /etc/netmon/netmon.toml        # the evidence sink's dir and listen
    netmon serve --dir /var/lib/netmon/evidence --listen 127.0.0.1:8123

Reports are written from the store on request (see :mod:`netmon.report.serve`), so
``evidence_url = "http://HOST:PORT/evidence/{host}/report.html"`` links work as soon
as an alert is sent. ``netmon run`` serves them itself when the evidence sink has
``listen``; this command is for a collector that does not, or for a replayed store.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from netmon.config import ConfigError
from netmon.sinks.store import StoreError, open_reader


@click.command("serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config: evidence sink and store")
@click.option("--listen", help="ADDRESS:PORT (default: the evidence sink's listen, else 127.0.0.1:8123)")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="evidence directory (default: the config's)")
@click.option("--db", type=click.Path(dir_okay=False), help="store the reports are written from (default: the config's)")
@click.option("--max-age", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="seconds a written report is served before it is written again")
def command(config_path: str | None, listen: str | None, directory: str | None, db: str | None, max_age: float) -> None:
    """Serve the evidence reports read-only over HTTP, at the URL alerts carry."""
    from netmon.report.serve import EvidenceServer, Site
    from netmon.sinks.evidence import configured, parse_listen

    try:
        table = configured(config_path)
        address, port = parse_listen(listen or table.listen or "127.0.0.1:8123")
        with open_reader(db, config_path) as reader:
            store = reader.path
    except (ConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    except StoreError:
        store = None  # no store yet: serve what `netmon evidence` wrote
    site = Site(Path(directory or table.dir), store, table.url_path, max_age)
    site.directory.mkdir(parents=True, exist_ok=True)
    try:
        server = EvidenceServer(site, address, port).start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {address}:{port}: {exc.strerror}") from None
    click.echo(f"serving {site.directory} at {server.url} (read-only; Ctrl-C stops)", err=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
