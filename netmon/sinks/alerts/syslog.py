"""Syslog for SIEMs: RFC 5424 messages over UDP (RFC 5426) or TCP (RFC 6587 octet counting).

One message per alert::

    <PRI>1 TIMESTAMP HOSTNAME netmon PROCID MSGID [netmon@32473 id="..." host="..." ...] BOM MSG

PRI = facility * 8 + severity (critical -> 2 crit, warning -> 4, info -> 6, resolved
-> 5 notice); MSGID is the event (``firing``, ``updated``, ``resolved``);
structured-data parameter values escape ``"``, ``\\`` and ``]`` as RFC 5424 says;
MSG is UTF-8 with a BOM. Over TCP each message is framed as ``LEN SP MSG``. A UDP
message is cut to ``max_udp`` octets (2048: what every RFC 5426 receiver accepts).
32473 is the example enterprise number RFC 5612 reserves for documentation; set
``enterprise`` to your own.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from netmon.sinks.alerts import text
from netmon.sinks.alerts.hook import HookConfig, reach_problems
from netmon.sinks.alerts.model import Alert, iso

FACILITIES = {
    "kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "authpriv": 10, "security": 13,
    **{f"local{i}": 16 + i for i in range(8)},
}
SEVERITY = {"critical": 2, "warning": 4, "info": 6, "resolved": 5}
BOM = b"\xef\xbb\xbf"


class Config(HookConfig):
    kind: Literal["syslog"]
    host: str = Field(..., description="collector address or name")
    port: int = Field(514, ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = "udp"
    facility: Literal[tuple(FACILITIES)] = "local0"  # type: ignore[valid-type]
    hostname: str = Field("", description="HOSTNAME field; default: this machine's name")
    enterprise: int = Field(32473, ge=1, description="private enterprise number of the SD-ID")
    max_udp: int = Field(2048, ge=480, le=65000)


def _sd_value(value: str) -> str:
    return text.one_line(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` octets, ``-`` if empty."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def message(alert: Alert, config: Config, now: float) -> bytes:
    """One RFC 5424 message (without transport framing)."""
    level = SEVERITY["resolved"] if alert.event == "resolved" else SEVERITY.get(alert.severity, 6)
    pri = FACILITIES[config.facility] * 8 + level
    params = {
        "id": alert.id,
        "event": alert.event,
        "host": alert.host,
        "hosts": " ".join(alert.hosts),
        "group": alert.group,
        "rule": alert.rule,
        "severity": alert.severity,
        "server": alert.server,
        "score": f"{alert.score:.4g}",
        "startsAt": iso(alert.starts_at),
        "evidence": alert.evidence_url,
    }
    sd = "[netmon@%d %s]" % (config.enterprise, " ".join(f'{k}="{_sd_value(v)}"' for k, v in params.items() if v))
    header = " ".join(
        (
            f"<{pri}>1",
            iso(now),
            _field(config.hostname or socket.gethostname(), 255),
            "netmon",
            _field(str(os.getpid()), 128),
            _field(alert.event, 32),
            sd,
        )
    )
    body = text.one_line(f"{alert.summary}: {alert.explanation}")
    return header.encode() + b" " + BOM + body.encode()


def frame(msg: bytes) -> bytes:
    """RFC 6587 octet-counting frame for TCP."""
    return str(len(msg)).encode() + b" " + msg


def build(config: Config) -> Callable[[Alert], None]:
    def deliver(alert: Alert) -> None:
        msg = message(alert, config, time.time())
        if config.protocol == "udp":
            with socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(config.timeout)
                sock.sendto(msg[: config.max_udp].decode("utf-8", "ignore").encode(), (config.host, config.port))
            return
        with socket.create_connection((config.host, config.port), timeout=config.timeout) as sock:
            sock.sendall(frame(msg))

    return deliver


def check(config: Config) -> list[str]:
    if config.protocol == "tcp":
        return reach_problems(config.host, config.port, "syslog collector")
    try:
        socket.getaddrinfo(config.host, config.port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        return [f"syslog host {config.host!r} does not resolve: {exc}"]
    return []
