"""``netmon replay FILE...``: a capture through the whole pipeline, in event time.

Sources are the given files (pcap / pcapng, gzip too) whatever the config names;
campus prefixes, detectors and sinks come from ``--config`` (defaults: rules, and
the embedded store), ``--internal`` and ``--interval`` override the config.
Prints the worst hosts with their reasons, then the findings; ``--findings-json``
writes every finding, one JSON object per line. Flow exports inside the capture
(UDP to the NetFlow/IPFIX/sFlow ports, see the pcap source) go through the flow
path into the same aggregation. A damaged or cut file exits 1 after everything
before the fault was replayed and reported, as ``decode`` does. SIGINT or SIGTERM
stops the reading: what was read is still scored, stored and reported, the store
closed, and the command exits 1 (a second signal acts as usual).
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from netmon import pipeline
from netmon.commands.damage import fail_if_damaged
from netmon.config import ConfigError, Settings, load, validate
from netmon.report.hosts import WORST_COLUMNS, console, reasons, worst_hosts
from netmon.report.listing import plural, table
from netmon.sinks.store import StoreError


def replay_settings(files: tuple[str, ...], config: str | None, internal: tuple[str, ...], interval: float | None,
                    db: str | None, state: str | None = None) -> Settings:
    """The config with the replay's overrides applied, validated again (errors name the key).

    Model state is read and written only where asked: ``state``, or a ``detect.checkpoint``
    the config sets; otherwise the replay starts cold and saves nothing, so replaying a
    capture never rewrites a running collector's models/state.ckpt behind its back."""
    loaded = load(config)
    data: dict[str, Any] = loaded.model_dump()
    if state is not None:
        data["detect"]["checkpoint"] = state
    elif "checkpoint" not in loaded.detect.model_fields_set:
        data["detect"]["checkpoint"] = ""
    if internal:
        data["campus"]["internal"] = list(internal)
    if interval is not None:
        data["aggregate"]["interval"] = interval
    data["sources"] = [{"type": "pcap", "paths": [str(Path(f)) for f in files]}]
    if db is not None:
        stores = [s for s in data["sinks"] if s["type"] == "store"]
        for sink in stores:
            sink["path"] = db
        if not stores:
            data["sinks"].append({"type": "store", "path": db})
    settings = validate(data, config or "command line")
    if not settings.campus.internal:
        raise ConfigError("no campus prefixes: give --internal PREFIX (repeatable) or campus.internal in --config")
    return settings


@contextmanager
def stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT or SIGTERM sets ``stop`` (the files are read no further, what was read is still
    scored and stored) instead of aborting or killing the run mid-way; the first one also
    puts the handlers back, so a second one acts as usual."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in before.items():
            signal.signal(sig, handler)

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()
        restore()

    for sig in before:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        restore()


@click.command("replay")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file")
@click.option("--internal", multiple=True, metavar="PREFIX", help="campus prefix, e.g. 10.0.0.0/8 (repeatable)")
@click.option("--findings-json", type=click.Path(dir_okay=False, allow_dash=True),
              help="write findings here, one JSON per line ('-': stdout, the summary then goes to stderr)")
@click.option("--interval", type=float, help="seconds per host-interval (default from config: 60)")
@click.option("--db", type=click.Path(dir_okay=False),
              help="embedded store file (default: the config's store, or netmon.db in the data directory)")
@click.option("--top", type=int, default=10, show_default=True, help="hosts and findings to print")
@click.option("--state", type=click.Path(dir_okay=False),
              help="model state file, restored at start and saved at the end (default: the config's "
                   "detect.checkpoint if it sets one; else none is read or written)")
def command(files: tuple[str, ...], config_path: str | None, internal: tuple[str, ...], findings_json: str | None,
            interval: float | None, db: str | None, top: int, state: str | None) -> None:
    """Replay capture FILEs through decode, aggregation, detection and the sinks."""
    try:
        settings = replay_settings(files, config_path, internal, interval, db, state)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if settings.detect.checkpoint:
        click.echo(f"model state: {Path(settings.detect.checkpoint).resolve()} (restored, saved at the end)", err=True)
    else:
        click.echo("model state: none kept (models start cold; --state FILE restores and saves them)", err=True)
    try:
        stages = pipeline.build(settings)
    except (StoreError, ConfigError, pipeline.StartError) as exc:  # a store path, a database that cannot be made
        raise click.ClickException(str(exc)) from None
    sources = list(stages.sources)  # the run lets go of each source as it ends
    stop = threading.Event()
    with stopped_by_signals(stop):
        summary = pipeline.run(stages, stop)
    if findings_json:
        with click.open_file(findings_json, "w") as out:
            for finding in summary.findings:
                out.write(json.dumps(finding.to_json(), default=float) + "\n")
    out = console(stderr=findings_json == "-")
    plain = {"highlight": False, "markup": False, "emoji": False}  # text as written (":x:" stays ":x:")
    hosts = len({f.host for f in summary.findings})
    out.print(f"{plural(summary.intervals, 'interval')} scored; {plural(len(summary.findings), 'finding')} on "
              f"{plural(hosts, 'host')}", **plain)
    if summary.findings:
        out.print(table(worst_hosts(summary.findings, top), WORST_COLUMNS, out.width, f"Worst hosts (top {top})"),
                  end="", **plain)
        for line in reasons(summary.findings, top):
            out.print(line, **plain)
    fail_if_damaged(e for slot in sources for e in getattr(slot.source, "errors", ()))
    if stages.sources:  # a signal stopped the run before these ended (it lets go of each as it ends)
        raise click.ClickException("stopped by a signal before the end of the files; what was read is scored, "
                                   "stored and listed above")
