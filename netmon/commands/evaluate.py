"""``netmon evaluate``: run the detectors over a labelled capture and score them.

    netmon evaluate --labels sim/labels.jsonl sim/campus.pcap
    netmon evaluate --simulate --hosts 2000 --days 7 --seed 1 --json eval.json

    netmon evaluate --simulate --cases shapes --hosts 2000 --days 7 --seed 1

With ``--simulate`` the generator's batches stream straight into the pipeline (a
week of a large campus never touches the disk). Prints one row per case (each of
issue 10's shapes its own): recall, daemons running at detection, time to
detect, false alerts per 1,000 host-days, and whether a runaway met its bar;
look-alikes (``expect quiet``) show the hosts flagged instead of recall.
``--json`` writes the whole report (see ``netmon.evaluate.score``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from netmon import evaluate
from netmon.batch import Observations
from netmon.commands.simulate import scenario_from, scenario_options
from netmon.config import ConfigError
from netmon.simulate import Simulation, generate
from netmon.simulate.labels import Labels, LabelsError, read


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _daemons(r: dict[str, Any]) -> str:
    stats = r.get("daemons_at_detection_stats")
    if not stats or stats["max"] is None:
        return "-"
    return f"{stats['median']:.0f} / {stats['max']:.0f}"


def _bar(r: dict[str, Any]) -> str:
    bar = r.get("bar")
    return "-" if not bar else ("met" if bar["met"] else "MISSED")


def report_table(report: dict[str, Any]) -> Table:
    """One row per case (each shape its own): runaways first, then the look-alikes."""
    table = Table(title="detection by injected case (daemons: running at detection, median / max; "
                        "false: alerts on the case's hosts outside it, and per 1,000 of their host-days)")
    for name in ("case", "expect", "hosts", "found", "recall", "daemons", "TTD median", "TTD max", "false",
                 "/1k host-d", "bar", "first detector"):
        table.add_column(name, no_wrap=name in ("case", "first detector"))
    ordered = sorted(report["cases"].items(), key=lambda kv: kv[1].get("expect", "alert") == "quiet")
    for case, r in ordered:
        ttd = r["time_to_detect_s"]
        first = ", ".join(f"{k} {v}" for k, v in sorted(r["first_detector"].items(), key=lambda kv: -kv[1]))
        quiet = r.get("expect") == "quiet"
        found = f"{r['flagged_hosts']} flagged" if quiet else str(r["detected"])
        per_1000 = r.get("false_per_1000_host_days")
        table.add_row(case, r.get("expect", "alert"), str(r["labelled"]), found, _ratio(r["recall"]), _daemons(r),
                      _duration(ttd["median"]), _duration(ttd["max"]), str(r.get("false_alerts", "-")),
                      "-" if per_1000 is None else f"{per_1000:.2f}", _bar(r), first or "-")
    return table


def print_report(console: Console, report: dict[str, Any]) -> None:
    console.print(report_table(report))
    false = report["false_alerts"]
    console.print(
        f"alerts {report['alerts']} (precision {_ratio(report['precision'])}); false alerts {false['count']} = "
        f"{false['per_1000_host_days']:.2f} per 1,000 host-days over {report['host_days']:.0f} host-days"
    )
    if false["count"]:
        console.print(f"false alerts by host kind: {false['by_kind']}; by detector: {false['by_detector']}")
    incident = report["cases"].get("incident")
    noisy = {case: r["false_by_detector"] for case, r in report["cases"].items() if r.get("false_by_detector")}
    if noisy:
        console.print("false alerts by case and detector: " + "; ".join(
            f"{case}: " + ", ".join(f"{d} {n}" for d, n in sorted(by.items(), key=lambda kv: -kv[1])) for case, by in noisy.items()))
    bars = {case: r["bar"]["bar"] for case, r in report["cases"].items() if "bar" in r}
    if bars:
        console.print("bars: " + "; ".join(f"{case} {bar}" for case, bar in bars.items()))
    if incident:
        daemons = incident["daemons_at_detection"]
        by_daemon = incident.get("bar", {}).get("by") == "daemons"  # else it began past its bar: a cold start
        console.print(f"incident: daemons running at detection {daemons or 'never detected'}"
                      + (f"; flagged by 4 daemons: {'yes' if incident['flagged_by_4_daemons'] else 'no'}" if by_daemon else ""))


def _items_from_simulation(sim: Simulation) -> Iterator[Observations]:
    """The simulator's batches, with a progress bar on a terminal (stderr)."""
    with Progress(console=Console(stderr=True), disable=not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("simulated packets", total=sim.rows())
        for rows in sim.batches():
            yield Observations(rows)
            bar.update(task, advance=len(rows))


def _items_from_pcaps(paths: tuple[str, ...]) -> Any:
    from netmon.sources.pcap import Config, PcapSource

    return PcapSource(Config(paths=list(paths))).batches()


@click.command()
@click.argument("pcaps", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", "labels_path", type=click.Path(exists=True, dir_okay=False), help="labels.jsonl from netmon simulate")
@click.option("--simulate", "simulated", is_flag=True, help="stream the simulator into the pipeline instead of reading PCAPS")
@scenario_options
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="TOML config (detectors, thresholds)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the report here as JSON")
@click.option("--policy/--no-policy", default=False, show_default=True,
              help="turn on the server allowlist rule with the simulation's sanctioned servers")
@click.option("--merge-gap", type=float, default=3600.0, show_default=True, help="seconds between findings that still make one alert")
def command(pcaps: tuple[str, ...], labels_path: str | None, simulated: bool, hosts: int, days: float, seed: int,
            internal: tuple[str, ...], cases: str, incident_daemons: int, config_path: str | None,
            json_path: str | None, policy: bool, merge_gap: float) -> None:
    """Score the detectors against labelled traffic: recall, precision, time to detect, false alerts."""
    if simulated == bool(pcaps):
        raise click.UsageError("give capture files with --labels, or --simulate (not both)")
    started = time.monotonic()
    sim = None
    try:
        if simulated:
            sim = generate(scenario_from(hosts, days, seed, internal, cases, incident_daemons))
            labels = Labels(meta=sim.meta(), cases=sim.labels, hosts=sim.hosts)
            if labels_path and read(labels_path).meta.get("scenario") != labels.meta["scenario"]:
                raise LabelsError(f"{labels_path} describes another scenario than the --simulate options")
        elif labels_path is None:
            raise click.UsageError("--labels FILE is needed to score a capture")
        else:
            labels = read(labels_path)
        with tempfile.TemporaryDirectory(prefix="netmon-eval-") as tmp:
            settings = evaluate.evaluation_settings(labels, config_path, str(Path(tmp) / "state.ckpt"), policy)
            items = _items_from_simulation(sim) if sim else _items_from_pcaps(pcaps)
            findings, tally, intervals = evaluate.run(settings, items, None if sim else labels)
        if not simulated:
            evaluate.check_capture(labels, tally.first, tally.last, tally.packets)
    except (LabelsError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    report = evaluate.score(labels, findings, settings.campus.ipv6_prefix, merge_gap,
                            interval=settings.aggregate.interval)
    report["detectors"] = list(settings.detect.detectors)
    report["policy"] = policy
    report["intervals"] = intervals
    report["packets"] = tally.packets
    report["runtime_s"] = time.monotonic() - started
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(f"{tally.packets} packets, {intervals} intervals, detectors {', '.join(report['detectors'])}, "
                  f"{report['runtime_s']:.0f} s")
    print_report(console, report)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, default=float) + "\n")
