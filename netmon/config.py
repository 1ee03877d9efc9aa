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

Plug-in tables are validated by the plug-in's own ``Config`` model (see
``netmon.registry``), so a new source or sink brings its settings with it.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from netmon import registry


class ConfigError(ValueError):
    """A config that cannot run; the message names each bad key and what is allowed."""


class Strict(BaseModel):
    """Base for config models: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_prefixes(values: list[str]) -> list[str]:
    """``values`` unchanged when each is an IP prefix; else a ValueError naming it (a pydantic validator)."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP prefix such as 10.0.0.0/8 or 2001:db8::/32 ({exc})") from None
    return values


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
    pair_window: float = Field(1800.0, gt=0, description="seconds each (host, server) pair's clients are averaged over")


class Detect(Strict):
    """Which detectors score each interval, and where their state is checkpointed."""

    model_config = ConfigDict(extra="allow", frozen=True)

    detectors: list[str] = Field(default_factory=lambda: ["rules", "hosts", "population", "baseline", "drift"])
    checkpoint: str = Field("models/state.ckpt", description="model state file, restored at start")

    @field_validator("detectors")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in registry.DETECTORS:
                raise ValueError(f"unknown detector {name!r}; allowed: {', '.join(sorted(registry.DETECTORS))}")
        return value

    def settings(self, name: str) -> BaseModel:
        """The validated ``[detect.NAME]`` table for detector ``name``."""
        module = registry.plugin("detector", name)
        return module.Config.model_validate((self.model_extra or {}).get(name, {}))

    @model_validator(mode="after")
    def _tables(self) -> "Detect":
        for key in self.model_extra or {}:
            if key not in registry.DETECTORS:
                raise ValueError(f"unknown table [detect.{key}]; allowed: {', '.join(sorted(registry.DETECTORS))}")
        return self


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class Settings(Strict):
    """The whole validated config."""

    campus: Campus = Field(default_factory=Campus)
    aggregate: Aggregate = Field(default_factory=Aggregate)
    detect: Detect = Field(default_factory=Detect)
    logging: Logging = Field(default_factory=Logging)
    sources: list[dict[str, Any]] = Field(default_factory=list)
    sinks: list[dict[str, Any]] = Field(default_factory=lambda: [{"type": "store"}])


def plugin_config(kind: str, table: dict[str, Any]) -> BaseModel:
    """Validate one ``[[sources]]`` or ``[[sinks]]`` table with its plug-in's model."""
    if "type" not in table:
        allowed = ", ".join(sorted(registry.KINDS[kind]))
        raise ValueError(f"a {kind} table needs type = one of: {allowed}")
    module = registry.plugin(kind, table["type"])
    return module.Config.model_validate(table)


def _describe(error: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for item in error.errors():
        where = prefix + ".".join(str(p) for p in item["loc"])
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{where or '(top level)'}: {item['msg']}{shown}")
    return lines


def _plugin_problems(data: dict[str, Any]) -> list[str]:
    """Each [[sources]] / [[sinks]] / [detect.NAME] table checked by its plug-in's own model."""
    problems = []
    for kind, key in (("source", "sources"), ("sink", "sinks")):
        tables = data.get(key, [])
        if not isinstance(tables, list):
            continue
        for index, table in enumerate(tables):
            where = f"{key}[{index}]"
            if not isinstance(table, dict):
                problems.append(f"{where}: expected a table ([[{key}]]), got {table!r}")
                continue
            try:
                plugin_config(kind, table)
            except ValidationError as exc:
                problems.extend(_describe(exc, where + "."))
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
    detect = data.get("detect", {})
    if isinstance(detect, dict):
        for name, table in detect.items():
            if name in registry.DETECTORS and isinstance(table, dict):
                try:
                    registry.plugin("detector", name).Config.model_validate(table)
                except ValidationError as exc:
                    problems.extend(_describe(exc, f"detect.{name}."))
    return problems


def validate(data: dict[str, Any], origin: str = "config") -> Settings:
    """Settings from a parsed TOML document; ConfigError names each bad key."""
    problems = _plugin_problems(data)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = _describe(exc) + problems
    except registry.UnknownPlugin as exc:
        problems.insert(0, str(exc))
    if problems:
        raise ConfigError(f"{origin}: invalid settings:\n" + "\n".join(problems))
    return settings


def load(path: str | Path | None) -> Settings:
    """Read and validate a TOML config; no path gives the defaults."""
    if path is None:
        return validate({})
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return validate(data, str(path))
