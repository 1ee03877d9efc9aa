"""``netmon run --config F``: the live service.

Runs the configured sources (capture, ebpf, netflow, sflow...) through the pipeline
until SIGINT or SIGTERM, then lets the sources drain, flushes the open intervals to
the sinks, saves model state and detaches. SIGHUP reloads the config: the sources are
rebuilt (an interface or a prefix may have changed); the aggregator, the detectors
and the sinks are kept, with their state, unless their part of the config changed.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click
import structlog

from netmon import logs, pipeline
from netmon.config import ConfigError, Settings, load
from netmon.detect.engine import Engine
from netmon.sinks.store import StoreError
from netmon.sources.live import LiveError

log = structlog.get_logger(__name__)


class Service:
    """One running netmon: the stages, and what signals ask of them."""

    def __init__(self, config_path: str, settings: Settings) -> None:
        self.config_path = config_path
        self.settings = settings
        self.stages = pipeline.build(settings)
        self.stop = threading.Event()
        self.reload = threading.Event()

    def stop_sources(self) -> None:
        """Ask every source to drain and end (only flags: safe in a signal handler)."""
        for source in self.stages.sources:
            getattr(source, "stop", source.close)()

    def on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            log.info("reload requested", config=self.config_path)
            self.reload.set()
        else:
            log.info("stopping", signal=signal.Signals(signum).name)
            self.stop.set()
        self.stop_sources()

    def items(self) -> Iterator[pipeline.Item]:
        """Items of the current sources; after a reload, of the new ones, on the same stages."""
        while True:
            yield from pipeline.merged(self.stages.sources, self.stop)
            for source in self.stages.sources:
                source.close()
            if self.stop.is_set() or not self.reload.is_set():
                return
            self.reload.clear()
            self.apply(self.config_path)

    def apply(self, path: str) -> None:
        """Rebuild what the new config changes; a bad new config keeps the old one running."""
        old = self.settings
        try:
            new = load(path)
            sources = [pipeline.build_plugin("source", t, new) for t in new.sources]
        except (ConfigError, LiveError, OSError) as exc:
            log.error("reload failed; keeping the running config", error=str(exc))
            new, sources = old, [pipeline.build_plugin("source", t, old) for t in old.sources]
        stages = self.stages
        if (new.campus, new.aggregate) != (old.campus, old.aggregate):
            for intervals in stages.aggregator.flush():
                pipeline.deliver(stages, stages.engine.process(intervals))
            stages.aggregator = pipeline.make_aggregator(new, sources)
        if new.detect != old.detect:
            stages.engine.save()
            stages.engine = Engine(new.detect, restore=True)
        if new.sinks != old.sinks:
            for sink in stages.sinks:
                sink.close()
            stages.sinks = [pipeline.build_plugin("sink", t, new) for t in new.sinks]
        stages.sources = sources
        self.settings = new
        log.info("config reloaded", sources=[t["type"] for t in new.sources])

    def run(self) -> pipeline.Summary:
        handlers = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            return pipeline.run_items(self.stages, self.items())
        finally:
            for source in self.stages.sources:
                source.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def _evidence_server(settings: Settings, config_path: str) -> Any:
    """The evidence reports' HTTP server, started when the evidence sink has ``listen``."""
    table = next((t for t in settings.sinks if t.get("type") == "evidence" and t.get("listen")), None)
    if table is None:
        return None
    from pathlib import Path

    from netmon.report.serve import EvidenceServer, Site
    from netmon.sinks.evidence import Config as EvidenceConfig, parse_listen
    from netmon.sinks.store import DEFAULT_PATH

    config = EvidenceConfig.model_validate(table)
    store = next((t.get("path", DEFAULT_PATH) for t in settings.sinks if t.get("type") == "store"), None)
    address, port = parse_listen(config.listen)
    try:
        return EvidenceServer(Site(Path(config.dir), Path(store) if store else None, config.url_path), address, port).start()
    except OSError as exc:
        raise click.ClickException(f"{config_path}: sinks (evidence): cannot listen on {config.listen}: {exc.strerror}") from None


def _refuse(config_path: str, exc: Exception) -> None:
    """A config that cannot start: the same one line per problem as ``check-config``, exit 2."""
    from netmon.commands.check_config import problems

    for problem in problems(config_path) or [str(exc)]:
        click.echo(problem, err=True)
    click.echo(f"netmon run: not started; fix the above (netmon check-config {config_path} checks again)", err=True)
    sys.exit(2)


@click.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="TOML config file")
def command(config_path: str) -> None:
    """Run the live sources of CONFIG until stopped (SIGINT/SIGTERM); SIGHUP reloads."""
    try:
        settings = load(config_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if not settings.sources:
        raise click.UsageError(f"{config_path}: no [[sources]]: add one, e.g. type = \"capture\", interface = \"eth0\"")
    logs.configure(settings.logging.level, settings.logging.format)
    server = _evidence_server(settings, config_path)
    try:
        service = Service(config_path, settings)
    except (LiveError, OSError, ValueError) as exc:
        _refuse(config_path, exc)
    log.info("netmon running", sources=[t["type"] for t in settings.sources])
    try:
        summary = service.run()
    except (LiveError, ConfigError, StoreError, OSError) as exc:  # no database, a busy port, an unwritable path
        raise click.ClickException(str(exc)) from None
    finally:
        if server is not None:
            server.stop()
    log.info("netmon stopped", intervals=summary.intervals, findings=len(summary.findings))
