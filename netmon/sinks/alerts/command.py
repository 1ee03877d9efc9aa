"""Executable hook: run a program per alert, argv from config, never through a shell.

The alert arrives as JSON on stdin and as environment variables (``NETMON_EVENT``,
``NETMON_STATUS``, ``NETMON_ID``, ``NETMON_HOST``, ``NETMON_HOSTS``, ``NETMON_GROUP``,
``NETMON_RULE``, ``NETMON_SEVERITY``, ``NETMON_SERVER``, ``NETMON_SCORE``,
``NETMON_SUMMARY``, ``NETMON_EXPLANATION``, ``NETMON_STARTS_AT``, ``NETMON_ENDS_AT``,
``NETMON_EVIDENCE_URL``), on top of the ``env`` from config and a minimal PATH. The
program must finish within ``timeout`` seconds (then it is killed); its exit status
is recorded (``alerts.exec.<name>.exit.<status>``) and a non-zero status is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Literal

import structlog
from pydantic import Field

from netmon import health
from netmon.sinks.alerts import text
from netmon.sinks.alerts.hook import HookConfig
from netmon.sinks.alerts.model import Alert

log = structlog.get_logger(__name__)


class Config(HookConfig):
    kind: Literal["exec"]
    argv: list[str] = Field(..., min_length=1, description="program and arguments; no shell is involved")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")


def environment(alert: Alert) -> dict[str, str]:
    """The NETMON_* variables for one alert (NUL and control characters removed)."""
    values = {
        "EVENT": alert.event,
        "STATUS": alert.status,
        "ID": alert.id,
        "HOST": alert.host,
        "HOSTS": " ".join(alert.hosts),
        "GROUP": alert.group,
        "RULE": alert.rule,
        "SEVERITY": alert.severity,
        "SERVER": alert.server,
        "SCORE": f"{alert.score:.6g}",
        "SUMMARY": alert.summary,
        "EXPLANATION": alert.explanation,
        "STARTS_AT": f"{alert.starts_at:.3f}",
        "ENDS_AT": "" if alert.ends_at is None else f"{alert.ends_at:.3f}",
        "EVIDENCE_URL": alert.evidence_url,
    }
    return {f"NETMON_{k}": text.one_line(v).replace("\ufffd", "?") for k, v in values.items()}


def build(config: Config) -> Callable[[Alert], None]:
    name = config.name

    def deliver(alert: Alert) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **config.env, **environment(alert)}
        stdin = json.dumps(alert.to_json(), default=str).encode()
        try:
            done = subprocess.run(config.argv, input=stdin, env=env, capture_output=True, timeout=config.timeout, check=False)
        except subprocess.TimeoutExpired:
            health.count(f"alerts.exec.{name}.timeout")
            raise RuntimeError(f"{config.argv[0]} did not finish within {config.timeout} s (killed)") from None
        health.count(f"alerts.exec.{name}.exit.{done.returncode}")
        log.info("alert exec hook ran", hook=name, alert=alert.id, status=done.returncode)
        if done.returncode != 0:
            raise RuntimeError(f"{config.argv[0]} exited with status {done.returncode}: {done.stderr[-200:]!r}")

    return deliver


def check(config: Config) -> list[str]:
    program = config.argv[0]
    if shutil.which(program) is not None:
        return []
    if os.path.exists(program):
        return [f"exec program {program!r} exists but is not an executable file"]
    return [f"exec program {program!r} is not found" + ("" if os.sep in program else " on PATH")]
