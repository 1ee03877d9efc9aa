"""``netmon cleanup``: remove what a netmon that died (SIGKILL, crash, power cut of the
service only) left attached: its tc filters on every interface of this and every named
network namespace, and its pinned maps under /sys/fs/bpf/netmon. Filters of a netmon
that is still running are listed and kept unless ``--all``.
"""

from __future__ import annotations

import click

from netmon.sources.live import LiveError


@click.command("cleanup")
@click.option("--all", "include_live", is_flag=True, help="also remove what running netmon processes attached")
@click.option("--dry-run", is_flag=True, help="list, remove nothing")
def command(include_live: bool, dry_run: bool) -> None:
    """Find and remove netmon's leftover eBPF filters and pinned maps."""
    from netmon.sources.ebpf import loader

    try:
        loader.check_privileges()
        found = loader.cleanup(include_live=include_live, dry_run=dry_run)
    except LiveError as exc:
        raise click.ClickException(str(exc)) from None
    removed = 0
    for item in found:
        gone = not dry_run and (include_live or not item.alive)
        removed += gone
        state = "removed" if gone else ("kept: its netmon is running" if item.alive else "left over")
        click.echo(f"{item.kind}\t{item.where}\tnetmon {item.owner}\t{state}")
    click.echo(f"{removed} removed, {len(found) - removed} kept" if found else "nothing of netmon's is attached")
