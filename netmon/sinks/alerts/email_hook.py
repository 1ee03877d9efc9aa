"""Email over SMTP: a short plain-text message that reads well on a phone.

STARTTLS (``starttls = true``, default) or implicit TLS (``tls = true``, port 465),
optional AUTH (``username`` with ``password`` or, better, ``password_env`` naming an
environment variable). The subject is one line (control characters removed); the
body comes from :func:`netmon.sinks.alerts.text.phone_body`.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Literal

from pydantic import Field

from netmon.sinks.alerts import text
from netmon.sinks.alerts.hook import HookConfig, reach_problems
from netmon.sinks.alerts.model import Alert


class Config(HookConfig):
    kind: Literal["email"]
    host: str = Field(..., description="SMTP server")
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = Field(True, description="upgrade with STARTTLS (port 587)")
    tls: bool = Field(False, description="implicit TLS from the first byte (port 465)")
    verify: bool = Field(True, description="verify the server's certificate")
    username: str = ""
    password: str = ""
    password_env: str = Field("", description="environment variable holding the password")
    sender: str = Field(..., alias="from", description="From address")
    to: list[str] = Field(..., min_length=1)
    subject_prefix: str = "[netmon]"


def compose(alert: Alert, config: Config) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = config.sender
    msg["To"] = ", ".join(config.to)
    msg["Subject"] = text.one_line(f"{config.subject_prefix} {alert.summary}")[:200]
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid("netmon")
    msg["X-Netmon-Alert"] = alert.id
    msg.set_content(text.phone_body(alert))
    return msg


def _password(config: Config) -> str:
    return os.environ.get(config.password_env, "") if config.password_env else config.password


def build(config: Config) -> Callable[[Alert], None]:
    context = ssl.create_default_context()
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    def deliver(alert: Alert) -> None:
        if config.tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        with client:
            if config.starttls and not config.tls:
                client.starttls(context=context)
            if config.username:
                client.login(config.username, _password(config))
            client.send_message(compose(alert, config))

    return deliver


def check(config: Config) -> list[str]:
    problems = []
    if config.tls and config.starttls:
        problems.append("tls (implicit, port 465) and starttls (port 587) exclude each other; set starttls = false")
    if config.password_env and config.password_env not in os.environ:
        problems.append(f"password_env {config.password_env!r} is not set in the environment")
    if (config.password or config.password_env) and not config.username:
        problems.append("a password is set but no username")
    if config.username and not (config.starttls or config.tls):
        problems.append("refusing AUTH over plain text; set starttls = true or tls = true")
    for address in [config.sender, *config.to]:
        if "@" not in parseaddr(address)[1]:
            problems.append(f"{address!r} is not an email address")
    return problems + reach_problems(config.host, config.port, "SMTP server")
