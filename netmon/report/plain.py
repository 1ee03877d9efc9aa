"""Findings in words an abuse desk reads: what the host did, against what, by how much.

The detectors' own explanations name model internals (a drift test's sum, a
forest's score, thresholds); they stay in the report's technical section. Here
each detector gets a title and a sentence built from the numbers in the
finding's evidence, with no model vocabulary.
"""

from __future__ import annotations

import math
from typing import Any

#: feature -> (words, unit after the number); rate features are per hour.
FEATURES: dict[str, tuple[str, str]] = {
    "requests_out": ("NTP requests sent", " an hour"),
    "requests_per_port": ("requests per network port", " an hour"),
    "socket_rate": ("requests from its busiest port to one server", " an hour"),
    "bytes_out": ("NTP bytes sent", " an hour"),
    "servers": ("time servers asked", ""),
    "client_ports": ("network ports used", ""),
    "rate_vs_poll": ("pace against the interval its own packets announce", " times"),
    "org_mismatch": ("requests that match no reply", " an hour"),
    "after_kod": ("requests after being told to slow down", " an hour"),
    "requests_in": ("NTP requests received", " an hour"),
    "replies_out": ("NTP replies sent", " an hour"),
    "ctl_out": ("control and monlist replies sent", " an hour"),
    "amplification": ("reply size against request size", " times"),
    "instance_seconds": ("NTP programs running at once (estimate)", ""),
}

#: detector -> (title, what it means; ``{name}`` fields come from the worst finding's evidence values)
DETECTORS: dict[str, tuple[str, str]] = {
    "rule.poll_rate": (
        "Asks for the time far more often than NTP allows",
        "A normal NTP client waits 64 to 1024 seconds between requests to one server. This host sent its "
        "requests {rate_vs_poll} times faster than the interval its own packets announce, as if about "
        "{instances} NTP programs were running at once."),
    "rule.kod_ignored": (
        "Keeps sending after the server told it to slow down",
        "The time server answered with Kiss-o'-Death packets, which ask a client to slow down or stop. "
        "A well-behaved client obeys; this host went on, with up to {after_kod} requests in one interval after being told."),
    "rule.origin": (
        "Its requests do not match the server's replies",
        "Each NTP request should repeat the time stamp of the server's previous reply. {org_mismatch} of this "
        "host's requests matched no reply, which happens when many copies of an NTP program share one port."),
    "rule.reflector": (
        "Can be used to amplify attacks on others",
        "This host answered NTP control or 'monlist' queries from outside with replies {amplification} times "
        "larger than the queries: the mechanism of NTP amplification attacks."),
    "rule.policy": (
        "Uses time servers outside the allowed list",
        "{servers} time server(s) outside the campus's allowed list were queried."),
    "hosts.level": (
        "Runs as many NTP clients as a crowd of machines",
        "Counting every request it sent to one time server, on all its network ports together, this host behaves "
        "like about {clients} NTP clients running at once, where one machine runs one: the shape of an NTP program "
        "started again and again with the earlier copies still running."),
    "hosts.growth": (
        "Keeps adding NTP clients, one after another",
        "Its NTP clients to one time server went up in {steps} steps, never falling back, to about {clients} running "
        "at once: an NTP program started again and again with the earlier copies still running."),
    "model.population": ("Behaves unlike similar hosts", "Compared with the usual host of its group ({group}): "),
    "model.baseline": ("Behaves unlike its own usual self", "Compared with its own usual level: "),
    "model.drift": ("Has grown steadily far above its earlier level",
                    "Compared with its level before the growth began: "),
}


#: evidence value -> a sentence added after any detector's when the finding carries it
ADDED: dict[str, str] = {
    "kods": "The time server sent it {kods} Kiss-o'-Death packets asking it to slow down or stop.",
}


def number(value: float) -> str:
    """A count or rate for a reader: ``3``, ``2.5``, ``1,200``."""
    if not math.isfinite(value):
        return "an unknown number of"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2g}" if abs(value) < 10 else f"{value:.0f}"


def amount(feature: str, value: float) -> str:
    """A feature value with its unit in words; the instance estimate in programs, not seconds."""
    if feature == "instance_seconds":
        return number(value / 3600.0)
    return number(value) + FEATURES.get(feature, ("", ""))[1]


def deviation(feature: str, detail: dict[str, Any]) -> str:
    """``NTP requests sent: 2,400 an hour instead of about 20 (120 times as many)``."""
    words = FEATURES.get(feature, (feature.replace("_", " "), ""))[0]
    value, usual = float(detail.get("value", math.nan)), float(detail.get("baseline", math.nan))
    text = f"{words}: {amount(feature, value)} instead of about {amount(feature, usual)}"
    if math.isfinite(value) and math.isfinite(usual) and usual > 0 and value / usual >= 1.5:
        text += f" ({number(value / usual)} times as much)"
    return text


def title(detector: str) -> str:
    return DETECTORS.get(detector, (detector, ""))[0]


def sentence(detector: str, evidence: dict[str, Any], group: str, fallback: str) -> str:
    """What the finding means, from its evidence; the detector's own text when it is not known here."""
    if detector not in DETECTORS:
        return fallback
    template = DETECTORS[detector][1]
    values = {k: number(float(v["value"])) for k, v in evidence.items() if isinstance(v, dict) and "value" in v}
    if detector.startswith("model."):
        parts = [deviation(k, v) for k, v in evidence.items() if isinstance(v, dict)]
        return template.format(group=group or "its group") + ("; ".join(parts) or "several measures at once") + "."
    try:
        text = template.format(**values)
    except KeyError:
        return fallback
    added = [ADDED[k].format(**values) for k in ADDED if k in values and float(evidence[k]["value"]) > 0]
    return " ".join([text, *added])
