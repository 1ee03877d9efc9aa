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
import math
import os
import stat
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Literal

import structlog
from pydantic import Field, field_validator, model_validator

from netmon import health
from netmon.config import Strict

log = structlog.get_logger(__name__)

Kind = Literal["silence", "allow"]


def network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or prefix as a network (an address is a /32 or /128)."""
    return ipaddress.ip_network(text.strip(), strict=False)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Longest duration accepted, seconds (ten years): "until removed" is no duration at all.
MAX_DURATION = 3650 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h``, ``1d`` or ``1w`` (above 0, at most ten
    years); ValueError saying so otherwise (``inf``, ``nan``, ``0``, ``-5m`` included)."""
    value = text.strip().lower()
    scale = _UNITS.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 2h or 1d") from None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_DURATION):
        raise ValueError(f"{text!r}: a duration must be above 0 and at most 3650d (leave it out for no expiry)")
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

    @field_validator("expires")
    @classmethod
    def _finite(cls, value: datetime | float | None) -> datetime | float | None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("expires must be a date or UNIX seconds; leave it out for no expiry")
        return value

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


class SilencesFileError(ValueError):
    """The silences file cannot be read as a whole; the message names the file and the line."""


def _entry(item: object) -> Rule:
    """One saved rule, checked as strictly as ``netmon silence add`` checks its input."""
    if not isinstance(item, dict):
        raise ValueError(f"expected an object, got {type(item).__name__}")
    allowed = {f.name for f in fields(Rule)}
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ValueError(f"unknown keys {', '.join(map(repr, unknown))}")
    rule = Rule(**item)
    if rule.kind not in ("silence", "allow"):
        raise ValueError(f"kind {rule.kind!r} is neither 'silence' nor 'allow'")
    for name in ("reason", "host", "prefix", "server", "id", "origin"):
        if not isinstance(getattr(rule, name), str):
            raise ValueError(f"{name} is not a string")
    for value in (rule.host, rule.prefix, rule.server):
        check_address(value)
    if not (rule.host or rule.prefix or rule.server):
        raise ValueError("needs host, prefix or server")
    for name in ("expires", "created"):
        value = getattr(rule, name)
        if name == "expires" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1e11 < value < 1e11:
            raise ValueError(f"{name} {value!r} is not a UNIX time in seconds")
    return rule


def read_file(path: Path) -> tuple[list[Rule], list[str]]:
    """Rules saved by ``netmon silence``, and one problem per entry skipped as unusable.

    A missing file is no rules. A file that is not a JSON list (a trailing comma
    typed by hand, say) is a :class:`SilencesFileError` naming file, line and column.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    except (OSError, UnicodeDecodeError) as exc:
        raise SilencesFileError(f"{path}: cannot read the silences file: {exc}") from None
    try:
        items = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as exc:
        raise SilencesFileError(
            f"{path}, line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); fix the file or move it aside"
        ) from None
    if not isinstance(items, list):
        raise SilencesFileError(f"{path}: expected a JSON list of silences, got {type(items).__name__}")
    rules, problems = [], []
    for index, item in enumerate(items):
        try:
            rules.append(_entry(item))
        except (TypeError, ValueError) as exc:
            ident = item.get("id", "?") if isinstance(item, dict) else "?"
            problems.append(f"{path}: entry {index + 1} (id {ident}) skipped: {exc}")
    return rules, problems


def load_file(path: Path) -> list[Rule]:
    """The usable rules of the silences file (see :func:`read_file`; unusable entries are left out)."""
    return read_file(path)[0]


def save_file(path: Path, rules: list[Rule]) -> None:
    """Write rules atomically (a reader never sees half a file); never writes a non-finite number.

    The file keeps its owner, group and mode; a new one takes its directory's owner and group
    and mode 0640. ``netmon silence`` run as root on a systemd install (the service a
    DynamicUser owning /var/lib/netmon) would otherwise leave a root-only file the service
    cannot read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.exists()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".silences.")
    try:
        with os.fdopen(fd, "w") as out:  # closed however the rest fails
            owner = (path if existing else path.parent).stat()
            os.fchmod(fd, stat.S_IMODE(owner.st_mode) if existing else 0o640)
            if os.geteuid() == 0:
                os.fchown(fd, owner.st_uid, owner.st_gid)
            json.dump([asdict(r) for r in rules], out, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Silences:
    """Config rules plus the command's file (re-read when its mtime changes)."""

    def __init__(self, rules: list[Rule], path: Path | None) -> None:
        self.config_rules = rules
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._file_rules: list[Rule] = []

    def rules(self) -> list[Rule]:
        """Config rules plus the file's; a file that cannot be read keeps the rules read before
        (logged and counted as ``alerts.silences.unreadable``), so a typo never stops alerting."""
        if self.path is not None:
            try:
                info = self.path.stat()
                stamp: tuple[int, int] | None = (info.st_mtime_ns, info.st_size)
            except OSError:
                stamp = None
            if stamp != self._stamp:
                self._stamp = stamp
                self._reload()
        return self.config_rules + self._file_rules

    def _reload(self) -> None:
        assert self.path is not None
        try:
            rules, problems = read_file(self.path)
        except SilencesFileError as exc:
            health.count("alerts.silences.unreadable")
            log.error("silences file unreadable; keeping the silences read before", error=str(exc),
                      kept=len(self._file_rules))
            return
        for problem in problems:
            health.count("alerts.silences.skipped")
            log.error("silence entry unusable", error=problem)
        self._file_rules = rules

    def match(self, host: str, server: str, now: float | None = None) -> Rule | None:
        """The first active rule that covers this host and server, if any."""
        now = time.time() if now is None else now
        for rule in self.rules():
            if rule.active(now) and rule.matches(host, server):
                return rule
        return None

