"""``netmon simulate``: a labelled capture of simulated campus NTP traffic.

Writes ``DIR/campus.pcap`` (``.pcap.gz`` with ``--gzip``) and ``DIR/labels.jsonl``
(the scenario, campus prefixes, host kinds and injected cases; see
``netmon.simulate.labels``). The same arguments and seed write the same files.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click
import structlog
from rich.progress import Progress

from netmon.decode.encode import frames_from_observations
from netmon.simulate import BUILDERS, CASE_SETS, Scenario, Simulation, generate
from netmon.sources.pcapfile import pcap_header, pcap_records

log = structlog.get_logger(__name__)


def write_capture(sim: Simulation, path: Path, progress: bool = True) -> int:
    """Stream the simulation's packets into a classic pcap (gzip when ``path`` ends in .gz)."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    written = 0
    with opener(path, "wb") as out, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("writing packets", total=sim.rows())
        out.write(pcap_header(1))
        for rows in sim.batches():
            frames = frames_from_observations(rows)
            out.write(pcap_records(frames, 0, len(frames)))
            written += len(frames)
            bar.update(task, advance=len(frames))
    return written


def scenario_from(hosts: int, days: float, seed: int, internal: tuple[str, ...], cases: str, incident_daemons: int) -> Scenario:
    """A Scenario from command-line values; click.BadParameter names the bad one."""
    v4 = [p for p in internal if ipaddress.ip_network(p, strict=False).version == 4]
    v6 = [p for p in internal if ipaddress.ip_network(p, strict=False).version == 6]
    chosen = tuple(dict.fromkeys(name for c in cases.split(",") if c.strip()
                                 for name in CASE_SETS.get(c.strip(), (c.strip(),))))
    kwargs = {"hosts": hosts, "days": days, "seed": seed, "cases": chosen, "incident_daemons": incident_daemons}
    if v4:
        kwargs["internal"] = v4[0]
    if v6:
        kwargs["internal6"] = v6[0]
    try:
        return Scenario(**kwargs)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _prefix(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an IP prefix such as 10.20.0.0/16") from None
    return values


def scenario_options(func):
    """The options that choose a scenario (shared with ``netmon evaluate --simulate``)."""
    options = [
        click.option("--hosts", type=click.IntRange(1), default=2000, show_default=True, help="campus addresses"),
        click.option("--days", type=click.FloatRange(min=0.01), default=7.0, show_default=True, help="length of the run (fractions allowed)"),
        click.option("--seed", type=int, default=1, show_default=True, help="the same seed gives the same traffic"),
        click.option("--internal", multiple=True, callback=_prefix, help="campus prefix (IPv4 and/or IPv6); defaults 10.20.0.0/16 and 2001:db8:20::/48"),
        click.option("--cases", default="classic", show_default=True,
                     help=f"comma-separated injected cases or sets ({', '.join(CASE_SETS)}): {', '.join(BUILDERS)}"),
        click.option("--incident-daemons", type=click.IntRange(1), default=1, show_default=True, help="ntpd instances already running when the incident starts"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command()
@scenario_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="directory for campus.pcap and labels.jsonl")
@click.option("--gzip", "compress", is_flag=True, help="write campus.pcap.gz")
def command(hosts: int, days: float, seed: int, internal: tuple[str, ...], cases: str, incident_daemons: int, out_dir: Path, compress: bool) -> None:
    """Simulate campus NTP traffic with labelled anomalies: a pcap and its labels."""
    scenario = scenario_from(hosts, days, seed, internal, cases, incident_daemons)
    out_dir.mkdir(parents=True, exist_ok=True)
    sim = generate(scenario)
    capture = out_dir / ("campus.pcap.gz" if compress else "campus.pcap")
    written = write_capture(sim, capture)
    sim.write_labels(out_dir / "labels.jsonl")
    click.echo(f"{capture}: {written} packets, {len(sim.hosts)} campus hosts over {days:g} days (seed {seed})")
    click.echo(f"{out_dir / 'labels.jsonl'}: {len(sim.labels)} injected case(s): {', '.join(sorted({c['case'] for c in sim.labels})) or 'none'}")
    click.echo(f"campus prefixes: {' '.join(f'--internal {p}' for p in (scenario.internal, scenario.internal6))}")
