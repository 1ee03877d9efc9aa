"""One exit-code rule for every command that reads capture files (``decode``, ``replay``).

A file that cannot be read to its end (cut short, corrupt, not a capture at all)
does not stop the command: everything before the fault is processed and reported
as usual. But the command then exits 1 with one line per damaged file naming the
byte offset, so a script never takes a partial result for a whole one.
"""

from __future__ import annotations

from collections.abc import Iterable

import click

from netmon.sources.pcapfile import CaptureError


def fail_if_damaged(errors: Iterable[CaptureError]) -> None:
    """Exit 1 (``click.ClickException``) listing ``errors``; nothing happens when there are none."""
    lines = [str(e) for e in errors]
    if lines:
        raise click.ClickException("\n".join(lines))
