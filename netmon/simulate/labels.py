"""The labels file: what a simulated capture contains, one JSON object per line.

Line 1 is the meta record (``type = "meta"``): the scenario (seed included), the
run's start and end (UNIX seconds), the campus prefixes and groups a config
needs (``gateways``: the NAT gateways a campus would declare), the number of
campus addresses and of observation rows. Then one ``type = "host"`` record per
campus address (its kind: ntpd, chrony, nat, dhcp, server, ...) and one
``type = "case"`` record per injected case on one host: ``case``, ``host``,
``start``, ``end`` (UNIX seconds, event time) and ``detail``; ``expect`` is
``quiet`` for a look-alike no detector should flag (``alert`` when absent), and a
runaway's ``detail.daemon_starts`` lists when each of its daemons started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1


class LabelsError(ValueError):
    """A labels file that cannot be read, or that does not describe the capture given."""


@dataclass
class Labels:
    meta: dict[str, Any]
    cases: list[dict[str, Any]] = field(default_factory=list)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def start(self) -> float:
        return float(self.meta["start"])

    @property
    def end(self) -> float:
        return float(self.meta["end"])

    @property
    def host_days(self) -> float:
        return float(self.meta["host_count"]) * (self.end - self.start) / 86400.0


def records(meta: dict[str, Any], hosts: dict[str, dict[str, Any]], cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every line of a labels file, in order."""
    out = [meta]
    out += [{"type": "host", "host": host, **detail} for host, detail in hosts.items()]
    out += [{"type": "case", **case} for case in cases]
    return out


def write(path: str | Path, meta: dict[str, Any], hosts: dict[str, dict[str, Any]], cases: list[dict[str, Any]]) -> None:
    with open(path, "w") as out:
        for record in records(meta, hosts, cases):
            out.write(json.dumps(record, sort_keys=True) + "\n")


def read(path: str | Path) -> Labels:
    """Parse and check a labels file; LabelsError says which line is wrong and why."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read labels ({exc.strerror})") from None
    labels: Labels | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LabelsError(f"{path}:{number}: not JSON ({exc.msg})") from None
        kind = record.get("type") if isinstance(record, dict) else None
        if labels is None:
            if kind != "meta" or record.get("version") != VERSION:
                raise LabelsError(f"{path}:{number}: the first record must be the meta record of version {VERSION} (from netmon simulate)")
            missing = [k for k in ("start", "end", "internal", "host_count") if k not in record]
            if missing:
                raise LabelsError(f"{path}:{number}: meta record lacks {', '.join(missing)}")
            labels = Labels(meta=record)
        elif kind == "host":
            labels.hosts[str(record["host"])] = record
        elif kind == "case":
            missing = [k for k in ("case", "host", "start", "end") if k not in record]
            if missing:
                raise LabelsError(f"{path}:{number}: case record lacks {', '.join(missing)}")
            labels.cases.append(record)
        else:
            raise LabelsError(f"{path}:{number}: unknown record type {kind!r} (meta, host or case)")
    if labels is None:
        raise LabelsError(f"{path}: empty labels file")
    return labels
