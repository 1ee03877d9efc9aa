"""What every hook kind shares: its common settings and the checks `check-config` runs.

A hook module exposes ``Config`` (with a ``kind`` literal), ``build(config)`` returning
``deliver(alert)`` (encode and send one alert; raises on failure, so the hook's managed
queue retries it) and ``check(config)``
returning a list of problems (empty when it can run).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field

from netmon.config import Strict, redact_url


class HookConfig(Strict):
    """Settings every hook has."""

    name: str = Field("", description="name in logs and health counters; default: kind and position")
    timeout: float = Field(10.0, gt=0, description="seconds before a hanging delivery is cut off")
    min_severity: Literal["", "info", "warning", "critical"] = Field("", description="only alerts at least this severe; empty = all the sink passes")


def url_problems(url: str, what: str = "url") -> list[str]:
    """Why ``url`` cannot be an http(s) endpoint, if it cannot."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return [f"{what} {redact_url(url)} is malformed: {exc}"]
    if parts.scheme not in ("http", "https"):
        return [f"{what} {redact_url(url)} must start with http:// or https://"]
    if not parts.hostname:
        return [f"{what} {redact_url(url)} names no host"]
    return []


def reach_problems(host: str, port: int, what: str, timeout: float = 3.0) -> list[str]:
    """Why a TCP connection to ``host:port`` fails, if it does (an unreachable hook)."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return [f"{what} {host}:{port} is unreachable: {exc.strerror or exc}"]
    return []


def url_reach_problems(url: str, what: str = "url") -> list[str]:
    """Malformed, or well-formed but nobody answers on its host and port."""
    problems = url_problems(url, what)
    if problems:
        return problems
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return reach_problems(parts.hostname or "", port, what)
