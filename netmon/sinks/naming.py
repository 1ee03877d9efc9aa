"""How netmon's dotted health names (:mod:`netmon.health`) appear outside: one name
plus labels, shared by the Prometheus endpoint (metric name and labels) and the
InfluxDB ``netmon_health`` measurement (field key and tags), so both schemas agree.

A name with a variable part (a reason, a source, an exporter address, a hook, a sink)
becomes one name with a label, never a name that embeds the value::

    source.netflow.exporter.127.0.0.1.lost.records
        -> source_exporter_lost_records {source="netflow", exporter="127.0.0.1"}
    source.sflow.agent.10.0.0.9.lost.datagrams
        -> source_exporter_lost_datagrams {source="sflow", exporter="10.0.0.9"}
    decode.skip.truncated      -> decode_skip {reason="truncated"}
    influx.spool.points        -> influx_spool_points {sink="influx"}
    sink.store.written         -> sink_written {sink="store"}
    pipeline.source.capture.restarts -> pipeline_source_restarts {source="capture"}
    aggregate.late             -> aggregate_late {}

Names use only ``[a-z0-9_]`` (no dots: InfluxQL needs no quoting, Prometheus accepts them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: (pattern, name template): the named groups are labels, except ``what`` which goes into
#: the name. First match wins, so the specific patterns come first.
LABELLED: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"decode\.skip\.(?P<reason>.+)"), "decode_skip"),
    (re.compile(r"source\.(?P<source>[^.]+)\.(?:exporter|agent)\.(?P<exporter>.+)\.(?P<what>lost\.[^.]+)"),
     "source_exporter_{what}"),
    (re.compile(r"source\.(?P<source>[^.]+)\.(?P<what>.+)"), "source_{what}"),
    (re.compile(r"alerts\.hook\.(?P<hook>[^.]+)\.(?P<what>.+)"), "alerts_hook_{what}"),
    (re.compile(r"alerts\.exec\.(?P<hook>[^.]+)\.exit\.(?P<code>-?\d+)"), "alerts_exec_exit"),
    (re.compile(r"alerts\.exec\.(?P<hook>[^.]+)\.(?P<what>.+)"), "alerts_exec_{what}"),
    (re.compile(r"detect\.checkpoint\.(?P<what>saved)"), "detect_checkpoint_{what}"),
    (re.compile(r"detect\.checkpoint\.(?P<problem>.+)"), "detect_checkpoint_problems"),
    (re.compile(r"pipeline\.source\.(?P<source>[^.]+)\.(?P<what>.+)"), "pipeline_source_{what}"),
    (re.compile(r"sink\.(?P<sink>[^.]+)\.(?P<what>.+)"), "sink_{what}"),
    # the influx sink's counters carry its configured name (two sinks, two names)
    (re.compile(r"(?P<sink>[^.]+)\.(?P<what>(?:write|spool)\..+)"), "influx_{what}"),
]

#: counters measured in seconds (sums of durations) stay floating point; every other
#: counter counts things and is written as an integer
FLOAT_COUNTER = re.compile(r".*(seconds|_s)$")


@dataclass(frozen=True)
class Name:
    """A health name as written: ``name`` (``[a-z0-9_]``) and its labels."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)

    def key(self) -> tuple[str, tuple[str, ...]]:
        """Name and label names: one Prometheus metric family, one set of InfluxDB tags."""
        return self.name, tuple(sorted(self.labels))


def clean(text: str) -> str:
    """``text`` with every character outside ``[a-zA-Z0-9_]`` as ``_``."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", text)


def split(health_name: str) -> Name:
    """The name and labels of one dotted health name."""
    for pattern, template in LABELLED:
        if match := pattern.fullmatch(health_name):
            labels = match.groupdict()
            what = labels.pop("what", "")
            return Name(clean(template.format(what=what)), labels)
    return Name(clean(health_name))


def is_integer_counter(name: Name) -> bool:
    """Whether a counter of this name counts things (written ``5i``) or sums seconds."""
    return not FLOAT_COUNTER.fullmatch(name.name)

#: counters every collector reports from its start, at 0 until something happens, so a
#: dashboard panel on a healthy collector shows 0, not "No data" (``decode.skip.truncated``
#: stands for the decode errors: any decoder can meet a truncated packet)
START_COUNTERS = ("decode.frames", "decode.ntp", "decode.skip.truncated", "aggregate.late",
                  "aggregate.host_intervals")
