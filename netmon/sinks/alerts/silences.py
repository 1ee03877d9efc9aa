"""Silences and the allowlist: which findings nobody needs to hear about, for how long, and why.

A rule matches a finding by host (the exact host key), prefix (the host lies inside
it) and/or server (an address or a prefix the finding's server lies inside); every
field given must match. ``expires`` is wall-clock UNIX seconds (a silence made now
for two hours ends two hours from now, whatever the packets' clock says); None never
expires. Rules come from the config (``silences``, ``allowlist``) and from the file
``netmon silence`` writes (a JSON list, re-read when it changes).
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from netmon.config import Strict

Kind = Literal["silence", "allow"]


def network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or prefix as a network (an address is a /32 or /128)."""
    return ipaddress.ip_network(text.strip(), strict=False)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h``, ``1d`` or ``1w``; ValueError otherwise."""
    value = text.strip().lower()
    scale = _UNITS.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 2h or 1d") from None
    if not seconds > 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return seconds


def check_address(value: str) -> str:
    """``value`` if empty or an address or prefix, else a ValueError that says what is expected."""
    if value:
        try:
            network(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an address or prefix such as 10.1.2.3 or 10.1.0.0/16") from None
    return value


def _same(a: str, b: str) -> bool:
    try:
        return network(a) == network(b)
    except ValueError:
        return a == b


def _within(text: str, prefix: str) -> bool:
    try:
        inner, outer = network(text), network(prefix)
    except ValueError:
        return text == prefix
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


class RuleConfig(Strict):
    """One ``[[sinks.silences]]`` or ``[[sinks.allowlist]]`` entry."""

    host: str = Field("", description="exact host (address, or IPv6 /64 key)")
    prefix: str = Field("", description="hosts inside this prefix")
    server: str = Field("", description="findings about this server address or prefix")
    expires: datetime | float | None = Field(None, description="TOML datetime or UNIX seconds; none = never")
    reason: str = Field(..., min_length=1, description="why: shown in `netmon silence list`")

    @field_validator("prefix", "server", "host")
    @classmethod
    def _address(cls, value: str) -> str:
        return check_address(value)

    @model_validator(mode="after")
    def _something(self) -> "RuleConfig":
        if not (self.host or self.prefix or self.server):
            raise ValueError("a silence or allowlist entry needs host, prefix or server")
        return self

    def rule(self, kind: Kind) -> "Rule":
        expires = self.expires.timestamp() if isinstance(self.expires, datetime) else self.expires
        return Rule(kind=kind, host=self.host, prefix=self.prefix, server=self.server, expires=expires, reason=self.reason, origin="config")


@dataclass(frozen=True)
class Rule:
    """A silence (temporary) or an allowlist entry (known good); see the module docstring."""

    kind: Kind
    reason: str
    host: str = ""
    prefix: str = ""
    server: str = ""
    expires: float | None = None
    created: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    origin: str = "command"

    def active(self, now: float) -> bool:
        return self.expires is None or self.expires > now

    def matches(self, host: str, server: str) -> bool:
        if self.host and not _same(host, self.host):
            return False
        if self.prefix and not _within(host, self.prefix):
            return False
        if self.server and not (server and _within(server, self.server)):
            return False
        return True


def load_file(path: Path) -> list[Rule]:
    """Rules saved by ``netmon silence``; a missing file is an empty list."""
    try:
        items = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    return [Rule(**item) for item in items]


def save_file(path: Path, rules: list[Rule]) -> None:
    """Write rules atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".silences.")
    with os.fdopen(fd, "w") as out:
        json.dump([asdict(r) for r in rules], out, indent=1)
    os.replace(tmp, path)


class Silences:
    """Config rules plus the command's file (re-read when its mtime changes)."""

    def __init__(self, rules: list[Rule], path: Path | None) -> None:
        self.config_rules = rules
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._file_rules: list[Rule] = []

    def rules(self) -> list[Rule]:
        if self.path is not None:
            try:
                info = self.path.stat()
                stamp: tuple[int, int] | None = (info.st_mtime_ns, info.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp:
                self._stamp = stamp
                self._file_rules = load_file(self.path) if stamp is not None else []
        return self.config_rules + self._file_rules

    def match(self, host: str, server: str, now: float | None = None) -> Rule | None:
        """The first active rule that covers this host and server, if any."""
        now = time.time() if now is None else now
        for rule in self.rules():
            if rule.active(now) and rule.matches(host, server):
                return rule
        return None

