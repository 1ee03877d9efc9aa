"""Model state on disk: saved atomically, restored at start, never a crash.

A checkpoint is a zip archive (format described in ``models/README.md``):

* ``header.json``: ``{"magic": "netmon-checkpoint", "format": 1, "netmon": ...,
  "river": ..., "numpy": ..., "created": ...}``;
* ``state.json``: the detectors' state tree, ``{detector name: state}``, where
  each leaf that is not plain JSON points into the archive: numpy arrays as
  ``.npy`` members (read with ``allow_pickle=False``), bytes as ``.bin`` members;
* the ``.npy`` and ``.bin`` members.

netmon itself unpickles nothing here. The only bytes members today are the
population model's river ``HalfSpaceTrees``, pickled by that detector because
river offers no other serialisation; the ``river`` version in the header
guards them: a checkpoint written under another river (or another format) is
set aside, not loaded.

Writing goes to a temporary file in the same directory, fsynced, then renamed
over the old one, so a crash mid-write leaves the previous checkpoint intact.
A checkpoint that cannot be read (corrupt, truncated, foreign) is logged, moved
aside as ``<name>.corrupt-<UTC time>`` or ``<name>.foreign-<UTC time>``, and
:func:`load` returns ``{}``: a clean cold start.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import river
import structlog

import netmon
from netmon import health

log = structlog.get_logger(__name__)

MAGIC = "netmon-checkpoint"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; ``kind`` is "corrupt" or "foreign"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def header() -> dict[str, Any]:
    """What this build writes, and checks on reading."""
    return {
        "magic": MAGIC,
        "format": FORMAT,
        "netmon": netmon.__version__,
        "river": river.__version__,
        "numpy": np.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _encode(value: Any, archive: zipfile.ZipFile, counter: list[int]) -> Any:
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v, archive, counter) for k, v in value.items()}}
    if isinstance(value, np.ndarray):
        counter[0] += 1
        name = f"arrays/{counter[0]}.npy"
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        archive.writestr(name, buffer.getvalue())
        return {"npy": name}
    if isinstance(value, bytes):
        counter[0] += 1
        name = f"blobs/{counter[0]}.bin"
        archive.writestr(name, value)
        return {"bin": name}
    if isinstance(value, np.generic):
        value = value.item()
    return {"json": value}


def _decode(node: Any, archive: zipfile.ZipFile) -> Any:
    if not isinstance(node, dict) or len(node) != 1:
        raise CheckpointError("corrupt", f"unexpected state node {str(node)[:80]!r}")
    (kind, value), = node.items()
    if kind == "dict":
        return {k: _decode(v, archive) for k, v in value.items()}
    if kind == "npy":
        return np.load(io.BytesIO(archive.read(value)), allow_pickle=False)
    if kind == "bin":
        return archive.read(value)
    if kind == "json":
        return value
    raise CheckpointError("corrupt", f"unknown state node kind {kind!r}")


def save(path: Path, states: dict[str, Any]) -> None:
    """Write ``{detector name: state}`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
                archive.writestr("header.json", json.dumps(header()))
                tree = _encode(states, archive, [0])
                archive.writestr("state.json", json.dumps(tree))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    health.count("detect.checkpoint.saved")
    log.info("checkpoint saved", path=str(path), bytes=path.stat().st_size, detectors=sorted(states))


def _read(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                head = json.loads(archive.read("header.json"))
            except KeyError:
                raise CheckpointError("corrupt", "no header.json: not a netmon checkpoint") from None
            if not isinstance(head, dict) or head.get("magic") != MAGIC:
                raise CheckpointError("corrupt", "header magic is not netmon-checkpoint")
            if head.get("format") != FORMAT:
                raise CheckpointError("foreign", f"format {head.get('format')!r}, this netmon reads format {FORMAT}")
            if head.get("river") != river.__version__:
                raise CheckpointError(
                    "foreign", f"written with river {head.get('river')!r}, this is river {river.__version__}"
                )
            if head.get("netmon") != netmon.__version__:
                log.info("checkpoint from another netmon version, same format", written=head.get("netmon"))
            states = _decode(json.loads(archive.read("state.json")), archive)
    except CheckpointError:
        raise
    except Exception as exc:  # an unreadable file is corrupt however it fails (zlib, zip, json, npy)
        raise CheckpointError("corrupt", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(states, dict):
        raise CheckpointError("corrupt", "state is not a table of detectors")
    return states


def load(path: Path) -> dict[str, Any]:
    """``{detector name: state}`` from ``path``; ``{}`` (a cold start) when absent or unusable."""
    path = Path(path)
    if not path.exists():
        log.info("no checkpoint; models start cold", path=str(path))
        return {}
    try:
        states = _read(path)
    except CheckpointError as exc:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}.{exc.kind}-{stamp}")
        try:
            os.replace(path, aside)
            kept = str(aside)
        except OSError as move_error:
            kept = f"left in place ({move_error})"
        health.count(f"detect.checkpoint.{exc.kind}")
        log.error(
            "checkpoint unusable; models start cold",
            path=str(path),
            reason=str(exc),
            kind=exc.kind,
            moved_to=kept,
        )
        return {}
    log.info("checkpoint restored", path=str(path), detectors=sorted(states))
    return states
