"""The one TOML config file, validated so an error names the key, the value and the fix.

Shape (every key is optional; see ``deploy/netmon.toml`` for a commented example)::

    [campus]
    internal = ["10.0.0.0/8", "2001:db8::/32"]   # campus prefixes
    ipv6_prefix = 64                              # roll IPv6 hosts up to their /64
    [campus.groups]                               # host groups, first match wins
    servers = ["10.0.0.0/28"]

    [aggregate]
    interval = 60                                  # seconds per host-interval

    [[sources]]                                    # one table per source plug-in
    type = "pcap"
    paths = ["capture.pcap"]

    [detect]
    detectors = ["rules", "hosts", "population", "baseline", "drift"]
    [detect.rules]                                 # one table per detector plug-in

    [[sinks]]                                      # one table per sink plug-in
    type = "store"

Plug-in tables are typed: ``sources``, ``sinks`` and the ``[detect.NAME]`` tables form a
pydantic discriminated union on ``type`` generated from :mod:`netmon.registry`, each
table validated once by the plug-in's own ``Config`` model, so a new source or sink
brings its settings with it. Every ``[[sinks]]`` table also takes a ``[sinks.buffer]``
(:class:`Buffer`), and ``[pipeline]`` (:class:`Runtime`) says how sources are restarted.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from netmon import registry
from netmon.paths import data_path


class ConfigError(ValueError):
    """A config that cannot run; the message names each bad key and what is allowed."""


class Strict(BaseModel):
    """Base for config models: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_prefixes(values: list[str]) -> list[str]:
    """``values`` unchanged when each is an IP prefix; else a ValueError naming it and the fix
    (a pydantic validator). Host bits set (``10.20.1.0/16``) are an error: the writer meant
    either the /16 or a longer prefix, and silently taking 10.20.0.0/16 may cover 255 times
    the hosts they had in mind."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP prefix such as 10.0.0.0/8 or 2001:db8::/32 ({exc})") from None
            address = value.split("/")[0]
            shortest = next(n for n in range(network.prefixlen, network.max_prefixlen + 1)
                            if ipaddress.ip_network(f"{address}/{n}", strict=False).network_address
                            == ipaddress.ip_address(address))
            raise ValueError(f"{value!r} has host bits set: write {network} (the /{network.prefixlen} containing "
                             f"it) or {address}/{shortest} (the prefix starting there)") from None
    return values


def check_url(value: str) -> str:
    """``value`` unchanged when it is an http(s) URL with a host; else a ValueError with the fix
    (a pydantic validator): ``localhost:8086`` would otherwise fail at the first request."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"URL {value!r} needs a scheme: write http://{value.split('://')[-1]} (or https://)")
    if not parts.hostname:
        raise ValueError(f"URL {value!r} names no host, e.g. http://127.0.0.1:8086")
    return value


class Campus(Strict):
    """Which addresses are ours, and how they are grouped."""

    internal: list[str] = Field(default_factory=list, description="campus prefixes, IPv4 and IPv6")
    ipv6_prefix: int = Field(64, ge=1, le=128, description="IPv6 hosts roll up to this prefix length; 128 = per address")
    groups: dict[str, list[str]] = Field(default_factory=dict, description="group name -> prefixes; first match wins")
    default_group: str = "clients"

    _prefixes = field_validator("internal")(check_prefixes)

    @field_validator("groups")
    @classmethod
    def _group_prefixes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for prefixes in value.values():
            check_prefixes(prefixes)
        return value


class Aggregate(Strict):
    """Per-host, per-interval aggregation in event time."""

    interval: float = Field(60.0, gt=0, description="interval length, seconds")
    lateness: float = Field(2.0, ge=0, description="seconds a window stays open for late packets")
    kod_holdoff: float = Field(3600.0, gt=0, description="seconds after a KoD during which requests count as ignoring it")
    max_window_rows: int = Field(1_000_000, ge=1000, description="raw rows one open window holds (~123 bytes each); "
                                 "past it a flood is thinned, packets and bytes weighted (aggregate.thinned_rows)")
    pair_window: float = Field(1800.0, gt=0, description="seconds each (host, server) pair's clients are averaged over")


class Detect(Strict):
    """Which detectors score each interval, and where their state is checkpointed.

    One ``[detect.NAME]`` table per detector plug-in, typed by its own ``Config``: the
    fields are added from the registry by :func:`settings_model` (this base class, used
    directly, takes the tables as extras and validates one when it is asked for)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    detectors: list[str] = Field(default_factory=lambda: ["rules", "hosts", "population", "baseline", "drift"])
    checkpoint: str = Field(default_factory=functools.partial(data_path, "models", "state.ckpt"),
                            description="model state file (data only, no pickle), restored at start and saved "
                                        "while running and at the end; default models/state.ckpt in the data "
                                        "directory; empty = keep no state")
    checkpoint_every: float = Field(
        300.0, ge=0, description="seconds (wall clock) between checkpoints while running, and at stop; 0 = only at stop"
    )

    @field_validator("detectors")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in registry.DETECTORS:
                raise ValueError(f"unknown detector {name!r}; allowed: {', '.join(sorted(registry.DETECTORS))}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _tables(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields and key not in registry.DETECTORS:
                    raise ValueError(f"unknown table [detect.{key}]; allowed: {', '.join(sorted(registry.DETECTORS))}")
        return data

    def settings(self, name: str) -> BaseModel:
        """The validated ``[detect.NAME]`` table for detector ``name``."""
        table = getattr(self, name, None)
        if isinstance(table, BaseModel):
            return table
        return registry.plugin("detector", name).Config.model_validate(table or {})


class TypedDetect(Detect):
    """Base of the generated, typed :class:`Detect`: every table is a declared field."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class Runtime(Strict):
    """``[pipeline]``: how the pipeline runs its sources (sinks have their own ``[sinks.buffer]``)."""

    restart_initial: float = Field(1.0, gt=0, description="seconds before a failed live source is built again; "
                                   "doubles per failure in a row, with jitter")
    restart_max: float = Field(60.0, gt=0, description="longest wait between restarts of a failed source, seconds")
    stall_timeout: float = Field(30.0, gt=0, description="seconds a live source may say nothing before windows "
                                 "stop waiting for it (counted pipeline.source.<tag>.stalled)")

    @model_validator(mode="after")
    def _order(self) -> Runtime:
        if self.restart_max < self.restart_initial:
            raise ValueError(f"restart_max ({self.restart_max}) must be >= restart_initial ({self.restart_initial})")
        return self


class Buffer(Strict):
    """``[sinks.buffer]``: the queue in front of one sink (see :mod:`netmon.runtime.sinks`)."""

    max_bytes: int = Field(64 << 20, ge=1 << 16, description="bytes queued for this sink (an estimate)")
    when_full: Literal["block", "drop_newest", "drop_oldest"] = Field(
        "block", description="block: the pipeline waits (nothing lost); drop_newest: the new item is dropped "
                             "for this sink and counted (sink.<tag>.dropped); drop_oldest: the oldest queued "
                             "item makes room (counted the same)")


class SinkOptions(Strict):
    """Keys every ``[[sinks]]`` table has beside its plug-in's own: the base of sink ``Config`` models."""

    buffer: Buffer = Field(default_factory=Buffer)


class Cluster(Strict):
    """``[cluster]``: collectors and scorers over a log (``netmon run --role``; see :mod:`netmon.cluster`).

    Unused by a single-process ``netmon run``, which needs no NATS at all."""

    transport: Literal["jetstream"] = Field("jetstream", description="the log between collectors and scorers")
    urls: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"],
                            description="NATS server URLs (credentials in them are never logged)")
    prefix: str = Field("netmon", pattern=r"^[A-Za-z0-9_-]+$",
                        description="subject prefix (<prefix>.obs.<partition>), stream and bucket names")
    partitions: int = Field(16, ge=1, le=4096, description="host partitions; fixed for the life of a stream")
    max_bytes: int = Field(1 << 30, ge=1 << 20, description="bytes the stream holds before collectors wait "
                           "(counted, transport.publish.retries; lag in transport.publish.blocked_seconds)")
    max_age: float = Field(7 * 86400.0, gt=0, description="seconds an unconsumed batch is kept")
    in_flight: int = Field(64, ge=1, description="messages a collector has unacknowledged at most")
    lease_timeout: float = Field(15.0, gt=0, description="seconds a partition stays owned by a silent scorer")
    dead_collector: float = Field(60.0, gt=0, description="seconds of silence after which a scorer stops waiting "
                                  "for a collector (counted pipeline.source.<collector>.stalled)")
    checkpoint_every: float = Field(30.0, ge=0, description="seconds (wall clock) between a partition's "
                                    "checkpoints, taken when it closes an interval or has nothing to read; "
                                    "0 = every time (what a takeover replays is at most this old)")
    node_id: str = Field("", description="this collector's or scorer's id; default <role>-<host name>-<PID>")
    collectors: list[str] = Field(default_factory=list, description="node ids of the collectors scorers wait for "
                                  "from their start (until each speaks, or dead_collector passes); a collector not "
                                  "listed is followed from its first message, so its rows older than what other "
                                  "collectors already closed are late (counted aggregate.late)")


class Settings(Strict):
    """The whole validated config; :func:`validate` returns it with typed plug-in tables
    (``sources`` and ``sinks`` hold each plug-in's own ``Config``, found by ``type``)."""

    campus: Campus = Field(default_factory=Campus)
    aggregate: Aggregate = Field(default_factory=Aggregate)
    pipeline: Runtime = Field(default_factory=Runtime)
    detect: Detect = Field(default_factory=Detect)
    logging: Logging = Field(default_factory=Logging)
    cluster: Cluster = Field(default_factory=Cluster)
    sources: list[Any] = Field(default_factory=list)
    sinks: list[Any] = Field(default_factory=lambda: [registry.plugin("sink", "store").Config(type="store")])

    @model_validator(mode="before")
    @classmethod
    def _one_pair_window(cls, data: Any) -> Any:
        """``[detect.hosts] window`` follows ``[aggregate] pair_window``: the hosts detector
        reads averages the aggregator makes over that window, so the one is derived from the
        other; set apart, they can only disagree."""
        if not isinstance(data, dict):
            return data
        aggregate, detect = data.get("aggregate"), data.get("detect")
        pair_window = aggregate.get("pair_window") if isinstance(aggregate, dict) else None
        hosts = detect.get("hosts") if isinstance(detect, dict) else None
        window = hosts.get("window") if isinstance(hosts, dict) else None
        if window is None:
            if pair_window is not None and (detect is None or isinstance(detect, dict)) \
                    and (hosts is None or isinstance(hosts, dict)):
                data = {**data, "detect": {**(detect or {}), "hosts": {**(hosts or {}), "window": pair_window}}}
            return data
        expected = pair_window if pair_window is not None else Aggregate.model_fields["pair_window"].default
        if window != expected:
            raise ValueError(f"[detect.hosts] window ({window}) must equal [aggregate] pair_window ({expected}"
                             f"{'' if pair_window is not None else ', its default'}); leave window out: it follows "
                             "pair_window")
        return data


def _union(kind: str, names: frozenset[str]) -> Any:
    """The discriminated union (on ``type``) of the ``Config`` of each plug-in of ``kind`` in ``names``."""
    models = tuple(registry.plugin(kind, name).Config for name in registry.KINDS[kind] if name in names)
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built at run time


def _named(data: dict[str, Any], key: str, kind: str) -> frozenset[str]:
    """The registered plug-in types of ``kind`` that the ``key`` tables of ``data`` name (the first
    registered one when none does: a union needs a member, and an unknown type is its error to name)."""
    tables = data.get(key)
    types = [t.get("type") for t in tables if isinstance(t, dict)] if isinstance(tables, list) else []
    known = frozenset(t for t in types if isinstance(t, str) and t in registry.KINDS[kind])
    return known or frozenset([next(iter(registry.KINDS[kind]))])


@functools.cache
def settings_model(sources: frozenset[str], sinks: frozenset[str]) -> type[Settings]:
    """:class:`Settings` with typed plug-in tables for the ``sources`` and ``sinks`` types a config
    names, generated from the registry on first use: only the plug-ins a config uses are imported
    (``netmon --help`` imports none, a replay neither the flow listeners nor the InfluxDB client)."""
    detect = create_model(
        "Detect", __base__=TypedDetect,
        **{name: (model, Field(default_factory=model))
           for name, model in ((n, registry.plugin("detector", n).Config) for n in registry.DETECTORS)},
    )
    return create_model(
        "Settings", __base__=Settings,
        detect=(detect, Field(default_factory=detect)),
        sources=(list[_union("source", sources)], Field(default_factory=list)),
        sinks=(list[_union("sink", sinks | {"store"})],
               Field(default_factory=lambda: [registry.plugin("sink", "store").Config(type="store")])),
    )


def plugin_config(kind: str, table: dict[str, Any]) -> BaseModel:
    """Validate one ``[[sources]]`` or ``[[sinks]]`` table with its plug-in's model."""
    if "type" not in table:
        allowed = ", ".join(sorted(registry.KINDS[kind]))
        raise ValueError(f"a {kind} table needs type = one of: {allowed}")
    module = registry.plugin(kind, table["type"])
    return module.Config.model_validate(table)


#: Parts of key names whose values an error never shows: a secret typed as a number
#: is still a secret, and a chat webhook's URL is a credential.
SECRET_WORDS = ("secret", "pass", "token", "key", "auth", "cred", "header", "cookie", "url", "dsn")
#: a URL in a line of text, without the punctuation after it ("…/path: error"), so redacting
#: text that holds an already redacted URL leaves it as it was
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*[^\s'\".,;:!?)]")


def redact_url(url: str) -> str:
    """``scheme://host:port/…``: which endpoint, without what may be a credential in it
    (``user:pass@``, a chat webhook's path, a token in the query)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a malformed URL)"
    rest = "/…" if parts.path.strip("/") or parts.query or parts.fragment else ""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    return f"{parts.scheme}://{host}{port}{rest}"


def redact(text: str) -> str:
    """``text`` with every URL in it shortened by :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def _shown(where: str, value: Any) -> str:
    """`` (got VALUE)`` for an error line, or nothing when the value may be a secret."""
    if isinstance(value, dict) or any(word in where.lower() for word in SECRET_WORDS):
        return ""
    return f" (got {redact(repr(value))})"
_PLUGIN_LISTS = {"sources": "source", "sinks": "sink"}

#: Keys older configs carry that were replaced, by their last part, and what replaced them:
#: a config written for an earlier netmon gets the fix, not only "extra inputs".
RETIRED = {
    "queue_size": "no longer a key: an alerts sink's queue is bounded in bytes, "
                  "[sinks.hook_buffer] max_bytes (and when_full)",
    "buffer_rows": "no longer a key: the store's memory buffer is bounded in bytes, buffer_bytes",
}


def _where(loc: tuple[Any, ...]) -> tuple[str, str | None]:
    """A pydantic error location as a config key (``sinks[0].buffer.max_bytes``), and the plug-in
    kind when the error is about a whole ``[[sources]]``/``[[sinks]]`` table."""
    parts, kind = [], None
    items = list(loc)
    while items:
        part = items.pop(0)
        if part in _PLUGIN_LISTS and items and isinstance(items[0], int):
            parts.append(f"{part}[{items.pop(0)}]")
            kind = _PLUGIN_LISTS[part]
            if items and items[0] in registry.KINDS[kind]:  # the union's tag: not a key of the file
                items.pop(0)
            continue
        parts.append(str(part))
    key = ".".join(parts).replace(".[", "[")
    return key, kind if len(parts) == 1 else None


def _describe(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per error: the key, what is wrong, and the value unless it may be a secret
    (a mistyped key's value is never shown: it may be a misspelt ``secret``)."""
    lines = []
    for item in error.errors():
        where, kind = _where(item["loc"])
        where = prefix + where
        value = item.get("input")
        if item["type"] == "union_tag_invalid" and kind:
            allowed = ", ".join(sorted(registry.KINDS[kind]))
            lines.append(f"{where}: unknown {kind} type {item['ctx']['tag']!r}; allowed: {allowed}")
            continue
        if item["type"] == "union_tag_not_found" and kind:
            allowed = ", ".join(sorted(registry.KINDS[kind]))
            lines.append(f"{where}: a {kind} table needs type = one of: {allowed}")
            continue
        if item["type"] == "model_attributes_type" and kind:
            lines.append(f"{where}: expected a table ([[{where.split('[')[0]}]]), got a {type(value).__name__}")
            continue
        retired = RETIRED.get(where.rsplit(".", 1)[-1]) if item["type"] == "extra_forbidden" else None
        if retired:
            lines.append(f"{where}: {retired}")
            continue
        shown = "" if item["type"] == "extra_forbidden" else _shown(where, value)
        lines.append(f"{where or '(top level)'}: {redact(item['msg'])}{shown}")
    return lines


def validate(data: dict[str, Any], origin: str = "config") -> Settings:
    """Settings from a parsed TOML document; ConfigError names each bad key."""
    if unusable := list(_unusable_values(data)):
        raise ConfigError(f"{origin}: invalid settings:\n" + "\n".join(unusable))
    try:
        model = settings_model(_named(data, "sources", "source"), _named(data, "sinks", "sink"))
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: invalid settings:\n" + "\n".join(_describe(exc))) from None


def load(path: str | Path | None) -> Settings:
    """Read and validate a TOML config; no path gives the defaults."""
    if path is None:
        return validate({})
    path = Path(path)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {exc.start}); a TOML config must be UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a usable config: arrays or tables nested too deeply to read") from None
    return validate(data, str(path))


def _unusable_values(node: Any, key: str = "") -> Iterator[str]:
    """Values TOML allows that no setting can use: inf and nan (a time or a size of inf passes
    "greater than 0" and then breaks arithmetic far from the config), and strings holding a
    NUL character (no path, address or URL can). One line per key."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _unusable_values(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _unusable_values(value, f"{key}[{index}]")
    elif isinstance(node, float) and not math.isfinite(node):
        yield f"{key}: {node} is not a value any setting accepts; give a finite number"
    elif isinstance(node, str) and "\x00" in node:
        yield f"{key}: contains a NUL character (\\u0000), which no path, address or name can hold"
