"""``netmon run --config F``: the live service.

Runs the configured sources (capture, ebpf, netflow, sflow...) through the pipeline
until SIGINT or SIGTERM, then lets the sources drain, flushes the open intervals to
the sinks, saves model state and detaches. A source that fails is restarted with
backoff; a sink that fails is counted and skipped; neither ends the service.
SIGHUP reloads the config (see :meth:`Service.apply`): what changed is checked and
built before it runs, and any failure keeps the running config; the aggregator, the
detectors and the sinks keep their state unless their part of the config changed.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click
import structlog

from netmon import health, logs, pipeline, registry
from netmon.aggregate import Aggregator
from netmon.config import ConfigError, Settings, load
from netmon.detect.engine import Engine
from netmon.runtime.sinks import ManagedSink
from netmon.runtime.sources import Supervised
from netmon.sinks.store import StoreError
from netmon.sources.live import LiveError

log = structlog.get_logger(__name__)


class ReloadError(RuntimeError):
    """A new config's stages cannot run; the message says why (every problem)."""


class Service:
    """One running netmon: the stages, the pipeline running them, and what signals ask of them."""

    def __init__(self, config_path: str, settings: Settings) -> None:
        self.config_path = config_path
        self.settings = settings
        self.stages = pipeline.build(settings)
        self.runner = pipeline.Pipeline(self.stages, pipeline.Summary(keep=pipeline.SERVICE_KEEP))
        self.stop = threading.Event()
        self.reload = threading.Event()

    def on_signal(self, signum: int, _frame: Any) -> None:
        """Only flags (safe in a signal handler): the pipeline's thread acts on them."""
        if signum == signal.SIGHUP:
            self.reload.set()
        else:
            self.stop.set()

    def between(self) -> None:
        """Called by the pipeline between items: apply a pending reload."""
        if self.reload.is_set() and not self.stop.is_set():
            self.reload.clear()
            log.info("reload requested", config=self.config_path)
            self.apply(self.config_path)

    def apply(self, path: str) -> bool:
        """Move to the config at ``path``; on any failure keep running the current one.

        Sources and sinks the new config does not change run on untouched. The ones it
        replaces are stopped (they may hold the port, interface or spool the new ones
        need), then every new source and sink is checked (``check()``) and built; on any
        problem (a bad config, a missing interface, a busy port) whatever was built is
        closed again, the replaced ones are built again from the running config, and
        the reload is counted failed (``pipeline.reload.failed``). A new source's own
        lateness holds windows open from its first item on.
        """
        try:
            new = load(path)
        except ConfigError as exc:
            return self._failed(str(exc))
        old, stages = self.settings, self.stages
        kept = [slot for slot in stages.sources if slot.config in new.sources]
        gone = [slot for slot in stages.sources if slot not in kept]
        names = dict(zip(map(id, new.sources), pipeline.tags("source", new.sources)))
        added = [c for c in new.sources if not any(c == slot.config for slot in kept)]
        sinks_change = new.sinks != old.sinks
        for slot in gone:
            slot.close()
            self.runner.forget(slot)
        if sinks_change:
            for sink in stages.sinks:
                sink.close()
        try:
            sources, sinks = self._build(new, added, [names[id(c)] for c in added], sinks_change)
        except Exception as exc:  # noqa: BLE001 - any failure to start the new config keeps the old one
            self._restore(old, gone, sinks_change)
            return self._failed(str(exc))
        if (new.campus, new.aggregate) != (old.campus, old.aggregate):
            self.runner.finish()
            stages.aggregator = Aggregator(new.campus, new.aggregate)
        if new.detect != old.detect:
            stages.engine.save()
            stages.engine = Engine(new.detect, restore=True)
        stages.sinks = sinks
        stages.runtime = new.pipeline
        self.runner.clock.stall_timeout = new.pipeline.stall_timeout
        for slot in kept:  # the minimum lateness may have changed
            slot.lateness = max(new.aggregate.lateness, float(getattr(slot.source, "lateness", 0.0)))
            self.runner.clock.set_lateness(slot.tag, slot.lateness)
        for slot in sources:
            stages.sources.append(slot)
            self.runner.start(slot)
        self.settings = new
        health.count("pipeline.reload.applied")
        log.info("config reloaded", sources=[slot.tag for slot in stages.sources], started=[s.tag for s in sources],
                 stopped=[s.tag for s in gone], sinks_rebuilt=sinks_change)
        return True

    def _build(self, new: Settings, added: list[Any], names: list[str], sinks_change: bool,
               ) -> tuple[list[Supervised], list[ManagedSink]]:
        """Check, then build, the new sources (and the sinks when they change); nothing is left
        open when this raises."""
        if sinks_change:
            problems = [f"sinks[{i}] ({c.type}): {p}" for i, c in enumerate(new.sinks) for p in registry.check("sink", c)]
            if problems:
                raise ReloadError("; ".join(problems))
        sources = pipeline.build_sources(new, added, names)  # checks each source, then builds it
        if not sinks_change:
            return sources, self.stages.sinks
        try:
            return sources, pipeline.build_sinks(new)
        except BaseException:
            for slot in sources:
                slot.close()
            raise

    def _restore(self, old: Settings, gone: list[Supervised], sinks_change: bool) -> None:
        """Build again what the failed reload stopped, from the running config."""
        try:
            for slot in pipeline.build_sources(old, [s.config for s in gone], [s.tag for s in gone]):
                self.stages.sources.append(slot)
                self.runner.start(slot)
            if sinks_change:
                self.stages.sinks = pipeline.build_sinks(old)
        except Exception as exc:  # noqa: BLE001 - e.g. the interface vanished meanwhile
            health.count("pipeline.reload.restore_failed")
            log.error("could not restart what the failed reload stopped", error=str(exc)[:300])

    def _failed(self, reason: str) -> bool:
        health.count("pipeline.reload.failed")
        log.error("reload failed; keeping the running config", error=reason)
        return False

    def run(self) -> pipeline.Summary:
        handlers = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            return self.runner.run(self.stop, self.between)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def _evidence_server(settings: Settings, config_path: str) -> Any:
    """The evidence reports' HTTP server, started when the evidence sink has ``listen``."""
    config = next((c for c in settings.sinks if c.type == "evidence" and c.listen), None)
    if config is None:
        return None
    from pathlib import Path

    from netmon.report.serve import EvidenceServer, Site
    from netmon.sinks.evidence import parse_listen

    store = next((c.path for c in settings.sinks if c.type == "store"), None)
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


def _role(role: str, settings: Settings) -> None:
    """``--role collector|scorer``: one part of a cluster ([cluster]) until SIGINT/SIGTERM."""
    from netmon.cluster import collector, scorer
    from netmon.transport.jetstream import TransportError

    stop = threading.Event()
    handlers = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = (collector if role == "collector" else scorer).run(settings, stop)
    except (LiveError, pipeline.StartError, TransportError, StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    log.info("netmon stopped", role=role, intervals=summary.intervals, findings=summary.finding_count,
             failed_sources=summary.failed_sources)


@click.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="TOML config file")
@click.option("--role", type=click.Choice(["collector", "scorer"]), default=None,
              help="run one part of a cluster over [cluster] (NATS JetStream): collector = sources -> publish, "
                   "scorer = leased partitions -> aggregate -> detect -> sinks; default: the whole pipeline here")
def command(config_path: str, role: str | None) -> None:
    """Run the live sources of CONFIG until stopped (SIGINT/SIGTERM); SIGHUP reloads."""
    try:
        settings = load(config_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if role is not None:
        if role == "collector" and not settings.sources:
            raise click.UsageError(f"{config_path}: a collector needs [[sources]]")
        logs.configure(settings.logging.level, settings.logging.format)
        _role(role, settings)
        return
    if not settings.sources:
        raise click.UsageError(f"{config_path}: no [[sources]]: add one, e.g. type = \"capture\", interface = \"eth0\"")
    logs.configure(settings.logging.level, settings.logging.format)
    server = _evidence_server(settings, config_path)
    try:
        service = Service(config_path, settings)
    except (LiveError, pipeline.StartError, ConfigError, StoreError, OSError, ValueError) as exc:
        _refuse(config_path, exc)
    log.info("netmon running", sources=[slot.tag for slot in service.stages.sources])
    try:
        summary = service.run()
    except (LiveError, pipeline.StartError, ConfigError, StoreError, OSError) as exc:  # e.g. a database gone
        raise click.ClickException(str(exc)) from None
    finally:
        if server is not None:
            server.stop()
    log.info("netmon stopped", intervals=summary.intervals, findings=summary.finding_count,
             failed_sources=summary.failed_sources)
