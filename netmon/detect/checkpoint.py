"""Model state on disk: data only, checked before it is read, saved atomically, never a crash.

A checkpoint (format described in ``models/README.md``) is a header, then a zip
archive:

* the header: ``HEADER_BYTES`` bytes, one line of JSON padded with spaces,
  ``{"magic": "netmon-checkpoint", "format": 2, "netmon": ..., "river": ...,
  "numpy": ..., "created": ..., "bytes": N, "sha256": <hex digest of the N
  archive bytes that follow>}``;
* in the archive, ``state.json``: the detectors' state tree, ``{detector name:
  state}``, where each leaf that is not plain JSON is a numpy array stored as an
  ``.npy`` member (read with ``allow_pickle=False``).

Nothing in a checkpoint is code: no pickle anywhere (river's forests are stored as
arrays, :mod:`netmon.detect.forests`), so a crafted file can at worst be refused.
The magic, the format and the checksum are verified before the archive is opened;
anything else is refused.

Writing goes to a temporary file in the same directory, fsynced, then renamed
over the old one, so a crash mid-write leaves the previous checkpoint intact.
A checkpoint that cannot be read (corrupt, truncated, foreign) is logged, moved
aside as ``<name>.corrupt-<UTC time>`` or ``<name>.foreign-<UTC time>``, and
:func:`load` returns ``{}``: a clean cold start. A path that names something other
than a regular file (a directory, ``/dev/null``, a FIFO) is never opened, moved or
replaced: loading starts cold, saving fails as a full disk does.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import river
import structlog

import netmon
from netmon import health

log = structlog.get_logger(__name__)

MAGIC = "netmon-checkpoint"
FORMAT = 2
#: Length of the header line (JSON padded with spaces, ending in a newline).
HEADER_BYTES = 1024
#: Bytes hashed or copied at a time: a checkpoint is never held in memory whole.
BLOCK = 1 << 20
#: An archive may expand to this many bytes, or to EXPANSION times its size if more:
#: a crafted "zip bomb" must not exhaust memory at every start (a crash loop).
EXPANDED_FREE = 1 << 30
EXPANSION = 200


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; ``kind`` is "corrupt" or "foreign"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def header() -> dict[str, Any]:
    """What this build writes, and checks on reading (the checksum is added when saving)."""
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
        return np.lib.format.read_array(io.BytesIO(archive.read(value)), allow_pickle=False)
    if kind == "json":
        return value
    raise CheckpointError("corrupt", f"unknown state node kind {kind!r}")


def save(path: Path, states: dict[str, Any]) -> None:
    """Write ``{detector name: state}`` to ``path`` atomically (temp file, fsync, rename).

    The archive is streamed to the temporary file after a blank header, hashed from
    there, then the header is written in place. Raises what writing raises (OSError
    on a full disk, TypeError for a state that is not data); the previous checkpoint
    is then left as it was.
    """
    path = Path(path)
    _refuse_other_than_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as raw:
            _write(raw, states)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        _sync_directory(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    health.count("detect.checkpoint.saved")
    log.info("checkpoint saved", path=str(path), bytes=path.stat().st_size, detectors=sorted(states))


def dumps(states: dict[str, Any]) -> bytes:
    """The bytes :func:`save` would write (a checkpoint kept elsewhere than in a file: a cluster's log)."""
    stream = io.BytesIO()
    _write(stream, states)
    return stream.getvalue()


def loads(data: bytes) -> dict[str, Any]:
    """``{detector name: state}`` from :func:`dumps`' bytes; CheckpointError when they are not one."""
    return _states(io.BytesIO(data))


def _write(raw: BinaryIO, states: dict[str, Any]) -> None:
    """The archive streamed after a blank header, hashed from there, then the header written in place."""
    raw.write(b" " * HEADER_BYTES)
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        tree = _encode(states, archive, [0])
        archive.writestr("state.json", json.dumps(tree))
    size = raw.tell() - HEADER_BYTES
    raw.seek(HEADER_BYTES)
    head = {**header(), "bytes": size, "sha256": _sha256(raw)}
    line = json.dumps(head).encode()
    if len(line) >= HEADER_BYTES:
        raise ValueError(f"checkpoint header of {len(line)} bytes does not fit {HEADER_BYTES}")
    raw.seek(0)
    raw.write(line.ljust(HEADER_BYTES - 1) + b"\n")


def _sha256(stream: BinaryIO) -> str:
    """Hex SHA-256 of the rest of ``stream``, read a block at a time."""
    digest = hashlib.sha256()
    while block := stream.read(BLOCK):
        digest.update(block)
    return digest.hexdigest()


def _sync_directory(directory: Path) -> None:
    """fsync a directory so a rename in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _header(stream: BinaryIO) -> dict[str, Any]:
    """The verified header; the checksum of everything after it is checked too, before
    anything else is read (CheckpointError otherwise). Leaves ``stream`` anywhere."""
    first = stream.read(HEADER_BYTES)
    if first.startswith(b"PK"):
        raise CheckpointError("foreign", "a format 1 checkpoint (pickled forests): not loaded, this netmon reads format 2")
    if len(first) < HEADER_BYTES or not first.startswith(b'{"magic": "' + MAGIC.encode() + b'"') \
            or not first.endswith(b"\n"):
        raise CheckpointError("corrupt", "no netmon-checkpoint header: not a netmon checkpoint")
    try:
        head = json.loads(first)
    except ValueError:
        raise CheckpointError("corrupt", "the header is not JSON") from None
    if not isinstance(head, dict) or head.get("magic") != MAGIC:
        raise CheckpointError("corrupt", "header magic is not netmon-checkpoint")
    if head.get("format") != FORMAT:
        raise CheckpointError("foreign", f"format {head.get('format')!r}, this netmon reads format {FORMAT}")
    size = stream.seek(0, os.SEEK_END) - HEADER_BYTES
    if head.get("bytes") != size:
        raise CheckpointError("corrupt", f"header says {head.get('bytes')!r} bytes follow, {size} do (truncated?)")
    stream.seek(HEADER_BYTES)
    if head.get("sha256") != _sha256(stream):
        raise CheckpointError("corrupt", "checksum mismatch: the file was damaged after it was written")
    return head


def _refuse_other_than_file(path: Path) -> None:
    """A checkpoint path naming a directory, a device or a FIFO (``/tmp``, ``/dev/null``) is a
    slip in the config: it is never opened (a FIFO would block), renamed aside or replaced."""
    if path.exists() and not path.is_file():
        raise OSError(errno.EISDIR if path.is_dir() else errno.EINVAL,
                      "not a regular file: a checkpoint path must name a file", str(path))


def _read(path: Path) -> dict[str, Any]:
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise CheckpointError("corrupt", f"cannot read it: {exc.strerror or exc}") from None
    with stream:
        try:
            return _states(stream)
        except OSError as exc:
            raise CheckpointError("corrupt", f"cannot read it: {exc.strerror or exc}") from None


def _states(stream: BinaryIO) -> dict[str, Any]:
    """The states of one checkpoint in ``stream``, header and checksum verified first."""
    head = _header(stream)
    if head.get("netmon") != netmon.__version__:
        log.info("checkpoint from another netmon version, same format", written=head.get("netmon"))
    try:  # zipfile finds the archive after the header itself
        with zipfile.ZipFile(stream) as archive:
            expanded = sum(item.file_size for item in archive.infolist())
            if expanded > max(EXPANDED_FREE, EXPANSION * head["bytes"]):
                raise CheckpointError("corrupt", f"the archive of {head['bytes']} bytes claims to expand to {expanded}")
            states = _decode(json.loads(archive.read("state.json")), archive)
    except CheckpointError:
        raise
    except Exception as exc:  # checksummed yet unreadable (zip, json, npy): corrupt however it fails
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
    if not path.is_file():
        health.count("detect.checkpoint.not_a_file")
        log.error("checkpoint path is not a regular file; models start cold, nothing there is moved or written",
                  path=str(path), fix="set detect.checkpoint (or --state) to a file name")
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
