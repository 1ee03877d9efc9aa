"""A deterministic campus NTP traffic generator with labelled anomalies.

    sim = generate(Scenario(hosts=2000, days=7, seed=1))
    for rows in sim.batches():      # OBS_DTYPE rows, time-ordered
        ...
    sim.labels                       # injected cases: host, case, start, end

The same scenario (seed included) gives the same rows and labels every time,
whatever the batch size: schedules come from one seeded generator in a fixed
order, and per-packet fields from a hash of each request (``netmon.simulate.packets``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from netmon.simulate import cases as case_module
from netmon.simulate import labels as labels_file
from netmon.simulate import packets, ratelimit, shapes
from netmon.simulate.campus import Campus, outside_world, populate
from netmon.simulate.events import EventTable, Reply, select
from netmon.simulate.world import AddressBook, Allocator

#: 2026-03-02 00:00 UTC, a Monday
DEFAULT_START = 1772409600.0
#: the cases a scenario has unless told otherwise (the classic anomalies)
CASES = tuple(case_module.CASES)
#: issue 10's shapes: runaways as real daemons make them, and look-alikes that must stay quiet
SHAPES = ("incident", *shapes.SHAPES)
#: every case by name
BUILDERS = {**case_module.CASES, **shapes.SHAPES}
#: names that stand for a set of cases
CASE_SETS = {"classic": CASES, "shapes": SHAPES, "all": tuple(BUILDERS)}
#: longest run: origins are matched on microsecond keys of 42 bits
MAX_DAYS = 50


@dataclass(frozen=True)
class Scenario:
    """What to simulate. ``hosts`` counts campus addresses (case hosts included)."""

    hosts: int = 2000
    days: float = 7.0
    seed: int = 1
    start: float = DEFAULT_START
    internal: str = "10.20.0.0/16"
    internal6: str = "2001:db8:20::/48"
    cases: tuple[str, ...] = CASES
    incident_daemons: int = 1

    def __post_init__(self) -> None:
        unknown = [c for c in self.cases if c not in BUILDERS]
        if unknown:
            raise ValueError(f"unknown case(s) {', '.join(unknown)}; allowed: {', '.join(BUILDERS)}")
        if self.hosts < 1 or not 0 < self.days <= MAX_DAYS:
            raise ValueError(f"a scenario needs at least 1 host and between 0 and {MAX_DAYS} days")


@dataclass
class Simulation:
    """Time-sorted request events, the address book, and the labels."""

    scenario: Scenario
    events: dict[str, np.ndarray]
    book: AddressBook
    labels: list[dict]
    hosts: dict[str, dict] = field(default_factory=dict)
    sanctioned: list[str] = field(default_factory=list)

    @property
    def start(self) -> float:
        return self.scenario.start

    @property
    def end(self) -> float:
        return self.scenario.start + self.scenario.days * 86400.0

    def batches(self, chunk: int = 50_000) -> Iterator[np.ndarray]:
        """Observation rows (OBS_DTYPE) in time order."""
        return packets.batches(self.events, self.book.arrays(), chunk)

    def rows(self) -> int:
        """How many observation rows :meth:`batches` yields in total."""
        return len(self.events["time"]) + packets.reply_count(self.events)

    def meta(self) -> dict:
        """The labels file's first record: what was simulated and how to read it back."""
        return {
            "type": "meta",
            "version": 1,
            "scenario": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.scenario).items()},
            "start": self.start,
            "end": self.end,
            "internal": [self.scenario.internal, self.scenario.internal6],
            "groups": {"servers": [f"{h}/32" for h, d in self.hosts.items() if d["kind"] == "server"]},
            "gateways": [f"{h}/32" for h, d in self.hosts.items() if d.get("declared")],
            "sanctioned_servers": self.sanctioned,
            "host_count": len(self.hosts),
            "rows": self.rows(),
        }

    def write_labels(self, path: str | Path) -> None:
        """The labels file (see ``netmon.simulate.labels``)."""
        labels_file.write(path, self.meta(), self.hosts, self.labels)


def generate(scenario: Scenario) -> Simulation:
    """Build the whole scenario's request schedule (no packets yet)."""
    rng = np.random.default_rng(scenario.seed)
    end = scenario.start + scenario.days * 86400.0
    campus = Campus(
        rng=rng,
        start=scenario.start,
        end=end,
        book=AddressBook(),
        table=EventTable(),
        v4=Allocator(scenario.internal, rng),
        v6=Allocator(scenario.internal6, rng, step=1 << 64),
        outside_clients=Allocator("198.18.0.0/16", rng),
    )
    outside_world(campus)
    labels: list[dict] = []
    case_hosts = 0
    for name in scenario.cases:
        before = len(campus.hosts)
        if name == "incident":
            labels += case_module.incident(campus, scenario.incident_daemons)
        else:
            labels += BUILDERS[name](campus)
        case_hosts += len(campus.hosts) - before
    populate(campus, max(1, scenario.hosts - case_hosts))
    events = campus.table.finish()
    answered = rng.random(len(events["time"])) < campus.book.arrays()["answer"][events["server"]]
    events["reply"] = np.where((events["reply"] == Reply.NORMAL) & ~answered, Reply.NONE, events["reply"]).astype(np.uint8)
    events = ratelimit.apply(events, campus.book.arrays())
    events = select(events, np.argsort(events["time"], kind="stable"))
    packets.link_origins(events)
    sanctioned = [campus.book.text[i] for i in campus.pool + campus.pool6 + campus.timesyncd + campus.windows]
    return Simulation(scenario=scenario, events=events, book=campus.book, labels=labels, hosts=campus.hosts,
                      sanctioned=sanctioned)
