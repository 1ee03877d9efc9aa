"""``netmon replay FILE...``: a capture through the whole pipeline, in event time.

Sources are the given files (pcap / pcapng, gzip too) whatever the config names;
campus prefixes, detectors and sinks come from ``--config`` (defaults: rules, and
the embedded store), ``--internal`` and ``--interval`` override the config.
Prints the worst hosts with their reasons, then the findings; ``--findings-json``
writes every finding, one JSON object per line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from netmon import pipeline
from netmon.config import ConfigError, Settings, load, validate
from netmon.report.hosts import console, reasons, worst_hosts_table
from netmon.sinks.store import StoreError


def replay_settings(files: tuple[str, ...], config: str | None, internal: tuple[str, ...], interval: float | None,
                    db: str | None) -> Settings:
    """The config with the replay's overrides applied, validated again (errors name the key)."""
    data: dict[str, Any] = load(config).model_dump()
    if internal:
        data["campus"]["internal"] = list(internal)
    if interval is not None:
        data["aggregate"]["interval"] = interval
    data["sources"] = [{"type": "pcap", "paths": [str(Path(f)) for f in files]}]
    if db is not None:
        stores = [s for s in data["sinks"] if s.get("type") == "store"]
        for sink in stores:
            sink["path"] = db
        if not stores:
            data["sinks"].append({"type": "store", "path": db})
    settings = validate(data, config or "command line")
    if not settings.campus.internal:
        raise ConfigError("no campus prefixes: give --internal PREFIX (repeatable) or campus.internal in --config")
    return settings


@click.command("replay")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file")
@click.option("--internal", multiple=True, metavar="PREFIX", help="campus prefix, e.g. 10.0.0.0/8 (repeatable)")
@click.option("--findings-json", type=click.Path(dir_okay=False), help="write findings here, one JSON per line")
@click.option("--interval", type=float, help="seconds per host-interval (default from config: 60)")
@click.option("--db", type=click.Path(dir_okay=False), help="embedded store file (default netmon-data/netmon.db)")
@click.option("--top", type=int, default=10, show_default=True, help="hosts and findings to print")
def command(files: tuple[str, ...], config_path: str | None, internal: tuple[str, ...], findings_json: str | None,
            interval: float | None, db: str | None, top: int) -> None:
    """Replay capture FILEs through decode, aggregation, detection and the sinks."""
    try:
        settings = replay_settings(files, config_path, internal, interval, db)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        stages = pipeline.build(settings)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    summary = pipeline.run(stages)
    if findings_json:
        with open(findings_json, "w") as out:
            for finding in summary.findings:
                out.write(json.dumps(finding.to_json(), default=float) + "\n")
    out = console()
    hosts = len({f.host for f in summary.findings})
    out.print(f"{summary.intervals} intervals scored; {len(summary.findings)} findings on {hosts} hosts")
    if summary.findings:
        out.print(worst_hosts_table(summary.findings, top))
        for line in reasons(summary.findings, top):
            out.print(line, highlight=False, markup=False)
