"""Generic webhook: the versioned alert JSON POSTed to a URL, optionally HMAC-signed.

Body: :meth:`Alert.to_json` (schema ``schema.json``, version ``netmon.alert/1``).
With ``secret`` set, two headers let the receiver verify origin and freshness:
``X-Netmon-Timestamp`` (UNIX seconds) and
``X-Netmon-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body bytes>">``.
``headers`` adds custom headers (an API token, say). A non-2xx answer is a failure
(retried by the hook's managed queue).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any, Literal

import requests
from pydantic import Field

from netmon.config import redact, redact_url
from netmon.sinks.alerts.hook import HookConfig, url_reach_problems
from netmon.sinks.alerts.model import Alert

class HookDeliveryError(RuntimeError):
    """A POST that failed; the message names the endpoint only as ``scheme://host/…``."""


SIGNATURE_HEADER = "X-Netmon-Signature"
TIMESTAMP_HEADER = "X-Netmon-Timestamp"


class Config(HookConfig):
    kind: Literal["webhook"]
    url: str = Field(..., description="http(s) endpoint that receives the JSON")
    secret: str = Field("", description="HMAC-SHA256 key; empty = unsigned")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for one body (receivers compute the same and compare)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def post_json(url: str, payload: Any, timeout: float, headers: dict[str, str], secret: str = "") -> None:
    """POST ``payload`` as JSON; :class:`HookDeliveryError` on a transport error or a non-2xx
    status, never showing more of ``url`` than scheme and host (it is logged when the send fails)."""
    body = json.dumps(payload, ensure_ascii=False, allow_nan=False, default=str).encode()
    sent = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "netmon", **headers}
    if secret:
        stamp = str(int(time.time()))
        sent[TIMESTAMP_HEADER] = stamp
        sent[SIGNATURE_HEADER] = signature(secret, stamp, body)
    try:
        response = requests.post(url, data=body, headers=sent, timeout=timeout)
    except requests.RequestException as exc:  # its text names the whole URL: a chat webhook's path is its key
        raise HookDeliveryError(f"{redact_url(url)}: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise HookDeliveryError(f"{redact_url(url)} answered HTTP {response.status_code}: {redact(response.text[:200])}")


def build(config: Config) -> Callable[[Alert], None]:
    def deliver(alert: Alert) -> None:
        post_json(config.url, alert.to_json(), config.timeout, config.headers, config.secret)

    return deliver


def check(config: Config) -> list[str]:
    return url_reach_problems(config.url)
