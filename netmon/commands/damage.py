"""One exit-code rule for every command that reads capture files (``decode``, ``replay``).

A file that cannot be read to its end (cut short, corrupt, not a capture at all)
does not stop the command: everything before the fault is processed and reported
as usual. But the command then exits 1 with one line per damaged file naming the
byte offset, so a script never takes a partial result for a whole one.
"""

from __future__ import annotations

from collections.abc import Iterable

import click

from netmon import health
from netmon.sources.pcapfile import CaptureError


def fail_if_damaged(errors: Iterable[CaptureError]) -> None:
    """Exit 1 (``click.ClickException``) listing ``errors``; nothing happens when there are none."""
    lines = [str(e) for e in errors]
    if lines:
        raise click.ClickException("\n".join(lines))


def nothing_decoded_note(path: str, frames: int, before: dict[str, float]) -> str | None:
    """Why a file whose ``frames`` gave no NTP packet at all gave none: the ``decode.skip``
    reasons counted since ``before`` (a health snapshot), e.g. a link type netmon does not
    decode. Without it a newcomer sees an empty listing or "0 intervals scored" and no why."""
    if not frames:
        return None
    skipped = {reason: n - before.get(f"decode.skip.{reason}", 0.0)
               for reason, n in health.counters_with_prefix("decode.skip.").items()}
    reasons = ", ".join(f"{reason} {n:.0f}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]) if n > 0)
    return f"{path}: {frames} frames, no NTP packet among them" + (f" (skipped: {reasons})" if reasons else "")
