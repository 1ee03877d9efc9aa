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
    detectors = ["rules", "population", "baseline", "drift"]
    [detect.rules]                                 # one table per detector plug-in

    [[sinks]]                                      # one table per sink plug-in
    type = "store"

Plug-in tables are validated by the plug-in's own ``Config`` model (see
``netmon.registry``), so a new source or sink brings its settings with it.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from netmon import registry
from netmon.paths import data_dir


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


class Detect(Strict):
    """Which detectors score each interval, and where their state is checkpointed."""

    model_config = ConfigDict(extra="allow", frozen=True)

    detectors: list[str] = Field(default_factory=lambda: ["rules", "population", "baseline", "drift"])
    checkpoint: str = Field(default_factory=lambda: str(data_dir() / "models" / "state.ckpt"),
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


#: Parts of key names whose values an error never shows: a secret typed as a number
#: is still a secret, and a chat webhook's URL is a credential.
SECRET_WORDS = ("secret", "pass", "token", "key", "auth", "cred", "header", "cookie", "url", "dsn")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*")


def redact_url(url: str) -> str:
    """``scheme://host:port/…``: which endpoint, without what may be a credential in it
    (``user:pass@``, a chat webhook's path, a token in the query)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a malformed URL)"
    rest = "/…" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{rest}"


def redact(text: str) -> str:
    """``text`` with every URL in it shortened by :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def _shown(where: str, value: Any) -> str:
    """`` (got VALUE)`` for an error line, or nothing when the value may be a secret."""
    if isinstance(value, dict) or any(word in where.lower() for word in SECRET_WORDS):
        return ""
    return f" (got {redact(repr(value))})"


def _describe(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per error: the key, what is wrong, and the value unless it may be a secret
    (a mistyped key's value is never shown: it may be a misspelt ``secret``)."""
    lines = []
    for item in error.errors():
        where = prefix + ".".join(str(p) for p in item["loc"])
        shown = "" if item["type"] == "extra_forbidden" else _shown(where, item.get("input"))
        lines.append(f"{where or '(top level)'}: {redact(item['msg'])}{shown}")
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
                problems.append(f"{where}: expected a table ([[{key}]]), got a {type(table).__name__}")
                continue
            try:
                plugin_config(kind, table)
            except ValidationError as exc:
                problems.extend(_describe(exc, where + "."))
            except ValueError as exc:
                problems.append(f"{where}: {redact(str(exc))}")
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
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {exc.start}); a TOML config must be UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return validate(data, str(path))
