"""Muzzle: rate-limit or drop one host's UDP/123 in the kernel with nftables, with an expiry.

Everything lives in one dedicated table, ``inet netmon_muzzle``, so netmon never
touches anyone else's rules::

    table inet netmon_muzzle {
      set hosts4 { type ipv4_addr; flags interval, timeout; }   # element timeout = expiry
      set hosts6 { type ipv6_addr; flags interval, timeout; }
      chain muzzle { ip saddr H limit rate R/second accept ...; drop }
      chain forward { type filter hook forward priority -5; ip saddr @hosts4 udp dport 123 jump muzzle; ... }
      chain input   { type filter hook input priority -5; ... }
    }

A muzzled host's UDP/123 (queries to servers, dport 123, and replies it serves,
sport 123) jumps to ``muzzle``: a per-host ``limit`` rule lets ``rate`` packets per
second through, the rest is dropped. When the set element times out the kernel
stops the jump, so expiry needs no daemon; the then inert per-host rule is swept by
the next ``netmon muzzle`` call. Every action writes one audit line (JSON) to
``audit_log`` and the structured log. Nothing changes unless ``enabled = true``:
otherwise each action is a dry run that prints the nft commands it would run.

Guard rails: a prefix wider than ``widest_v4`` / ``widest_v6`` (``0.0.0.0/0``
would silence the whole campus's NTP) is always refused, and an address outside
the campus prefixes (``[campus] internal``) is refused unless forced; rates and
durations must be finite and positive (a NaN rate once meant "drop all").
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import math
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from pydantic import Field, field_validator

from netmon.config import Strict
from netmon.paths import data_path

log = structlog.get_logger(__name__)

TABLE = "netmon_muzzle"
COMMENT = "netmon host="
#: Packets/s above which a "limit" is no muzzle (and nft's arithmetic is not meant for it).
MAX_RATE = 1_000_000.0
#: Longest muzzle, seconds: a year (an expiry is the point of a muzzle).
MAX_DURATION = 366 * 86400.0


class MuzzleError(RuntimeError):
    """nft refused a command; the message carries nft's own words."""


class Config(Strict):
    """``[sinks.muzzle]`` in the alerts sink table: the muzzle's switch, defaults and automatic use."""

    enabled: bool = Field(False, description="false = dry run: print the nft commands, change nothing")
    nft: str = Field("nft", description="the nft program")
    netns: str = Field("", description="act inside this network namespace (ip netns exec); empty = this one")
    audit_log: str = Field(default_factory=partial(data_path, "muzzle.log"),
                           description="JSON line per action (default: muzzle.log in the data directory)")
    rate: float = Field(0.0, ge=0, le=MAX_RATE, allow_inf_nan=False, description="default packets/s let through; 0 = drop all")
    duration: float = Field(3600.0, gt=0, le=MAX_DURATION, allow_inf_nan=False, description="default seconds until the muzzle expires")
    widest_v4: int = Field(24, ge=0, le=32, description="shortest IPv4 prefix length accepted (wider prefixes are refused)")
    widest_v6: int = Field(56, ge=0, le=128, description="shortest IPv6 prefix length accepted (wider prefixes are refused)")
    auto_rules: list[str] = Field(default_factory=list, description="rules whose alerts muzzle automatically; empty = never")
    auto_severities: list[str] = Field(default_factory=lambda: ["critical"])

    @field_validator("auto_severities")
    @classmethod
    def _severities(cls, value: list[str]) -> list[str]:
        from netmon.batch import SEVERITIES

        for item in value:
            if item not in SEVERITIES:
                raise ValueError(f"unknown severity {item!r}; allowed: {', '.join(SEVERITIES)}")
        return value

    def wants(self, event: str, rule: str, severity: str) -> bool:
        """Whether a firing or updated alert of this rule and severity muzzles its host."""
        return event != "resolved" and rule in self.auto_rules and severity in self.auto_severities


@dataclass(frozen=True)
class Muzzled:
    """One muzzled host as the kernel holds it: packets/s let through (0 = none), seconds left."""

    host: str
    rate: float
    expires_in: float
    reason: str


def host_network(host: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A host address or an IPv6 /64 host key; ValueError otherwise."""
    try:
        net = ipaddress.ip_network(host.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{host!r} is not a host address (or an IPv6 prefix host key): {exc}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen == 128 and net.network_address.ipv4_mapped is not None:
        return ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/32")
    return net


def check_rate(rate: float) -> float:
    """``rate`` (packets/s, 0 = drop) when finite and in range; ValueError saying what is allowed."""
    if not (math.isfinite(rate) and 0 <= rate <= MAX_RATE):
        raise ValueError(f"rate {rate!r}: packets/s let through must be a number from 0 (drop) to {MAX_RATE:g}")
    return rate


def check_duration(seconds: float) -> float:
    """``seconds`` when finite, positive and at most a year; ValueError otherwise."""
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_DURATION):
        raise ValueError(f"duration {seconds!r}: a muzzle lasts more than 0 s and at most {MAX_DURATION / 86400:g} days")
    return seconds


def _family(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[str, str]:
    return ("ip", "hosts4") if net.version == 4 else ("ip6", "hosts6")


def _element(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def _clean(reason: str) -> str:
    """A reason fit for an nft comment: printable ASCII, no quotes or backslashes, <= 120 chars."""
    return "".join(c for c in reason if 32 <= ord(c) <= 126 and c not in '"\\;{}')[:120]


def _limit(rate: float) -> str:
    """nft limit for ``rate`` packets/s (whole numbers per second, minute or hour), with a
    burst of one second's worth (at least 1 packet)."""
    burst = f"burst {max(1, round(rate))} packets"
    for unit, seconds in (("second", 1), ("minute", 60), ("hour", 3600)):
        if rate * seconds >= 1:
            return f"{max(1, round(rate * seconds))}/{unit} {burst}"
    return f"1/hour {burst}"


SETUP = """table inet {table} {{
  set hosts4 {{ type ipv4_addr; flags interval, timeout; }}
  set hosts6 {{ type ipv6_addr; flags interval, timeout; }}
  chain muzzle {{ }}
  chain forward {{
    type filter hook forward priority -5; policy accept;
{jumps}
  }}
  chain input {{
    type filter hook input priority -5; policy accept;
{jumps}
  }}
}}
add rule inet {table} muzzle counter drop
"""
JUMPS = "\n".join(
    f"    {fam} saddr @{name} udp {port} 123 jump muzzle" for fam, name in (("ip", "hosts4"), ("ip6", "hosts6")) for port in ("dport", "sport")
)


class Muzzle:
    """The nftables muzzle; ``dry_run`` when the config does not enable it."""

    def __init__(self, config: Config, campus: Sequence[str]) -> None:
        """``campus``: the ``[campus] internal`` prefixes; only hosts inside them are muzzled unless forced."""
        self.config = config
        self.campus = [ipaddress.ip_network(p, strict=False) for p in campus]
        self.dry_run = not config.enabled
        self.planned: list[str] = []

    def refusal(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network, force: bool) -> str:
        """Why muzzling ``net`` is refused ("" when it is not): too wide always, outside campus unless forced."""
        widest = self.config.widest_v4 if net.version == 4 else self.config.widest_v6
        if net.prefixlen < widest:
            return (f"{net} is wider than /{widest}, the widest prefix the muzzle accepts "
                    f"([sinks.muzzle] widest_v{net.version})")
        if force:
            return ""
        if not self.campus:
            return f"{net}: no campus prefixes configured ([campus] internal) to check it against; give --force to muzzle it anyway"
        if not any(net.version == c.version and net.subnet_of(c) for c in self.campus):  # type: ignore[arg-type]
            inside = ", ".join(str(c) for c in self.campus)
            return f"{net} is outside the campus prefixes ({inside}); give --force to muzzle it anyway"
        return ""

    def _nft(self, *args: str, script: str = "", json_out: bool = False) -> str:
        argv = [self.config.nft, *(["-j"] if json_out else []), *args]
        if self.config.netns:
            argv = ["ip", "netns", "exec", self.config.netns, *argv]
        done = subprocess.run(argv, input=script or None, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise MuzzleError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def _apply(self, script: str) -> None:
        """Run an nft script atomically, or only remember it in a dry run."""
        self.planned.append(script)
        if not self.dry_run:
            self._nft("-f", "-", script=script)

    def _exists(self) -> bool:
        try:
            self._nft("list", "table", "inet", TABLE)
        except (MuzzleError, FileNotFoundError):
            return False
        return True

    def _rules(self) -> list[dict[str, Any]]:
        if not self._exists():
            return []
        out = json.loads(self._nft("-a", "list", "chain", "inet", TABLE, "muzzle", json_out=True))
        return [item["rule"] for item in out["nftables"] if "rule" in item and "comment" in item["rule"]]

    def _elements(self) -> list[dict[str, Any]]:
        if not self._exists():
            return []
        found = []
        for name in ("hosts4", "hosts6"):
            out = json.loads(self._nft("list", "set", "inet", TABLE, name, json_out=True))
            for item in out["nftables"]:
                for elem in item.get("set", {}).get("elem", []):
                    found.append(elem["elem"])
        return found

    def list(self) -> list[Muzzled]:
        """Hosts muzzled now (expired ones are gone: the kernel removed them)."""
        rates = {_comment_host(r["comment"]): _comment_rate(r["comment"]) for r in self._rules()}
        result = []
        for elem in self._elements():
            val = elem["val"]
            host = f"{val['prefix']['addr']}/{val['prefix']['len']}" if isinstance(val, dict) else str(val)
            result.append(Muzzled(host, rates.get(host, 0.0), float(elem.get("expires", 0)), elem.get("comment", "")))
        return sorted(result, key=lambda m: m.host)

    def add(self, host: str, rate: float | None = None, duration: float | None = None, reason: str = "",
            force: bool = False) -> Muzzled:
        """Muzzle ``host`` for ``duration`` s, letting ``rate`` packets/s through (0 = drop).

        ValueError (nothing changed) for a bad address, rate or duration, a prefix
        wider than allowed, or, unless ``force``, an address outside the campus.
        """
        net = host_network(host)
        refused = self.refusal(net, force)
        if refused:
            raise ValueError(refused)
        rate = check_rate(self.config.rate if rate is None else rate)
        duration = check_duration(self.config.duration if duration is None else duration)
        fam, set_name = _family(net)
        elem = _element(net)
        script = [] if self._exists() else [SETUP.format(table=TABLE, jumps=JUMPS)]
        script += self._forget_script(elem, fam, set_name)
        script.append(
            f'add element inet {TABLE} {set_name} {{ {elem} timeout {max(1, math.ceil(duration))}s comment "{_clean(reason)}" }}'
        )
        if rate > 0:
            script.append(
                f'insert rule inet {TABLE} muzzle {fam} saddr {elem} limit rate {_limit(rate)} accept comment "{COMMENT}{elem} rate={rate:g}"'
            )
        self._apply("\n".join(script) + "\n")
        self._audit("add", elem, rate=rate, duration=duration, reason=reason, **({"forced": True} if force else {}))
        return Muzzled(elem, rate, duration, _clean(reason))

    def remove(self, host: str, reason: str = "") -> bool:
        """Lift the muzzle on ``host``; False when it was not muzzled."""
        net = host_network(host)
        fam, set_name = _family(net)
        elem = _element(net)
        script = self._forget_script(elem, fam, set_name)
        if script:
            self._apply("\n".join(script) + "\n")
        self._audit("remove", elem, reason=reason, found=bool(script))
        return bool(script)

    def sweep(self) -> int:
        """Delete per-host rate rules whose host is no longer muzzled (expired); how many."""
        live = {m.host for m in self.list()}
        stale = [r for r in self._rules() if _comment_host(r["comment"]) not in live]
        if stale:
            self._apply("".join(f"delete rule inet {TABLE} muzzle handle {r['handle']}\n" for r in stale))
        return len(stale)

    def _forget_script(self, elem: str, fam: str, set_name: str) -> list[str]:
        """nft commands that remove ``elem`` from its set and its rate rules, if present."""
        script = [f"delete element inet {TABLE} {set_name} {{ {elem} }}"] if any(m.host == elem for m in self.list()) else []
        script += [f"delete rule inet {TABLE} muzzle handle {r['handle']}" for r in self._rules() if _comment_host(r["comment"]) == elem]
        return script

    def _audit(self, action: str, host: str, **details: Any) -> None:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "action": action,
            "host": host,
            "dry_run": self.dry_run,
            "user": _user(),
            "netns": self.config.netns or _netns(),
            **details,
        }
        log.warning("muzzle", **line)
        path = Path(self.config.audit_log)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(json.dumps(line) + "\n")


def _comment_host(comment: str) -> str:
    return comment.removeprefix(COMMENT).split(" ")[0] if comment.startswith(COMMENT) else ""


def _comment_rate(comment: str) -> float:
    for word in comment.split():
        if word.startswith("rate="):
            return float(word[5:])
    return 0.0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _netns() -> str:
    """The network namespace this runs in (``ip netns exec`` sets it), for the audit line."""
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return ""

