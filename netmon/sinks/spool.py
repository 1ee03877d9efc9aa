"""A write-ahead spool on disk, so no point is lost while the database is down.

Every batch of line-protocol points a sink writes is appended here first and
removed only after the database accepted it, so points survive an outage, a
restart and a SIGKILL, and go out in the order they were written, with their own
timestamps (a resend overwrites the same point in InfluxDB, never duplicates it).

Layout of the spool directory:

* ``<seq>.seg``: append-only segment files, ``seq`` a zero-padded increasing
  number. Each record is a 12-byte header (payload length, point count, CRC-32 of
  the payload; little-endian uint32) and the payload (lines joined by ``\\n``).
  A record is written with one ``write(2)``, so it is in the kernel's page cache
  (and survives a SIGKILL of the process) as soon as :meth:`Spool.append` returns;
  :meth:`Spool.sync` fsyncs (it survives power loss once the sender called it).
* ``cursor``: ``<seq> <offset>`` of the first record not yet accepted, replaced
  atomically (write, fsync, rename) after each accepted send.
* ``lock``: an exclusive ``flock`` so two processes never share one spool.

The spool is bounded (``max_bytes``): when it is full, whole segments are dropped
oldest first and the points lost are counted (``<name>.spool.dropped_points``)
and logged, because a bound that bites silently is data loss nobody sees.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from netmon import health
from netmon.config import redact
from netmon.retry import Backoff

log = structlog.get_logger(__name__)

_HEADER = struct.Struct("<III")
_SEGMENT_SUFFIX = ".seg"


class SpoolBusy(RuntimeError):
    """Another process holds this spool directory."""


@dataclass(frozen=True)
class Position:
    """Where a record starts: segment number and byte offset in it."""

    seq: int
    offset: int


@dataclass(frozen=True)
class Record:
    """One appended batch: its lines, how many points, and where the next record starts."""

    start: Position
    end: Position
    lines: list[bytes]


def _segment_name(seq: int) -> str:
    return f"{seq:012d}{_SEGMENT_SUFFIX}"


class Spool:
    """A bounded, ordered, crash-safe queue of line-protocol batches in one directory.

    ``append`` is called by the writer (the pipeline thread); ``read``/``commit``
    by one sender thread. ``name`` prefixes the health counters (``influx``).
    Sizes are bytes.
    """

    def __init__(self, directory: str | Path, max_bytes: int, segment_bytes: int = 8 << 20, name: str = "influx"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 4, 4096))
        self.name = name
        self._lock = threading.Lock()
        self._lockfile = open(self.dir / "lock", "a+b")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise SpoolBusy(f"spool {self.dir} is in use by another netmon process") from None
        self._cursor = self._load_cursor()
        self._sent = 0
        self._last_drop_log = -math.inf
        self._sizes: dict[int, int] = {}
        self._points: dict[int, int] = {}
        sent: int | None = None  # points before the cursor, when it is at a record boundary of its segment
        for seq in self._segments():
            if seq == self._cursor.seq:
                sent = self._scan(seq, self._cursor.offset)
            else:
                self._scan(seq)
        self._cursor = self._usable(self._cursor, sent)
        self._drop_before_cursor()
        if self._cursor.seq not in self._sizes:  # its segment is gone (dropped by the bound, or by hand)
            self._cursor = Position(min(self._sizes, default=self._cursor.seq), 0)
        elif self._cursor.offset and sent is not None:
            self._sent = sent  # sent before a restart
        last = max(self._sizes, default=self._cursor.seq)
        self._write_seq = last
        self._fd = os.open(self.dir / _segment_name(last), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes.setdefault(last, 0)
        self._points.setdefault(last, 0)
        self._publish()
        if self.pending_points():
            log.info("spool holds unsent points from an earlier run", spool=str(self.dir), points=self.pending_points())

    # -- writer side -------------------------------------------------------------

    def append(self, lines: list[bytes]) -> None:
        """Append one batch of lines as one record; drops oldest segments if full."""
        if not lines:
            return
        payload = b"\n".join(lines)
        record = _HEADER.pack(len(payload), len(lines), zlib.crc32(payload)) + payload
        with self._lock:
            if self._sizes[self._write_seq] and self._sizes[self._write_seq] + len(record) > self.segment_bytes:
                self._roll()
            written = os.write(self._fd, record)
            if written != len(record):  # disk full mid-record: cut it off so later records stay readable
                os.ftruncate(self._fd, self._sizes[self._write_seq])
                raise OSError(errno.ENOSPC, f"spool {self.dir}: short write ({written} of {len(record)} bytes)")
            self._sizes[self._write_seq] += len(record)
            self._points[self._write_seq] += len(lines)
            self._enforce_bound()
            self._publish()

    def sync(self) -> None:
        """fsync the segment being written (durability against power loss), through a
        duplicate descriptor so appends never wait for the disk."""
        with self._lock:
            fd = os.dup(self._fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- sender side (one thread) ----------------------------------------------------

    def read(self, max_points: int) -> list[Record]:
        """Records from the cursor on, up to about ``max_points`` points (at least one record).

        Records before the write position never change, so they are read without the
        lock (a segment the bound unlinks meanwhile stays readable through its open file).
        """
        with self._lock:
            position, last_seq = self._cursor, self._write_seq
        records: list[Record] = []
        points = 0
        while points < max_points:
            record = self._read_at(position)
            if record is None:
                if position.seq < last_seq:
                    position = Position(position.seq + 1, 0)
                    continue
                break
            records.append(record)
            points += len(record.lines)
            position = record.end
        return records

    def commit(self, records: list[Record]) -> None:
        """Mark ``records`` (read in order from the cursor) as accepted: move the cursor past them.

        The cursor file is written and fsynced before any segment is deleted, and without
        the lock, so appends do not wait for the disk.
        """
        if not records:
            return
        position = records[-1].end
        tmp = self.dir / "cursor.tmp"
        with open(tmp, "w") as handle:
            handle.write(f"{position.seq} {position.offset}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.dir / "cursor")
        with self._lock:
            if records[0].start.seq < self._cursor.seq:
                return  # the bound dropped them meanwhile; the in-memory cursor is already past
            earlier = self._sent_before(position.seq)
            self._sent = earlier + sum(len(r.lines) for r in records if r.start.seq == position.seq)
            self._cursor = position
            self._drop_before_cursor()
            self._publish()

    def pending_points(self) -> int:
        """Points written but not yet accepted by the database."""
        with self._lock:
            return self._pending_points()

    def pending_bytes(self) -> int:
        """Bytes of segments still holding unsent records."""
        with self._lock:
            return sum(self._sizes.values())

    def close(self) -> None:
        """fsync and release the spool (its content stays for the next run)."""
        with self._lock:
            os.fsync(self._fd)
            os.close(self._fd)
            self._lockfile.close()

    # -- internals (called with self._lock held) ---------------------------------

    def _segments(self) -> list[int]:
        """Segment numbers; other files ending in .seg (a copy kept by hand: old.seg, 99.seg) are not the spool's."""
        stems = {p.name[: -len(_SEGMENT_SUFFIX)]: p for p in self.dir.glob("*" + _SEGMENT_SUFFIX) if p.is_file()}
        return sorted(int(s) for s, p in stems.items() if s.isdigit() and _segment_name(int(s)) == p.name)

    def _usable(self, cursor: Position, sent: int | None) -> Position:
        """The cursor, unless it was edited or damaged: ahead of every segment, negative, or
        not at the end of a record (``sent`` None: the scan of its segment passed no record
        boundary there), it would drop unsent points without a word (every segment below it
        is deleted) or never send again. The spool is then sent again from its oldest
        segment, counted: InfluxDB takes a resent point as an overwrite, not a duplicate."""
        if not self._sizes or (cursor.seq not in self._sizes and cursor.seq < max(self._sizes)):
            return cursor  # no spool yet, or a cursor into a segment the bound dropped: handled below
        if cursor.seq in self._sizes and sent is not None:
            return cursor
        health.count(f"{self.name}.spool.cursor_reset")
        log.warning("spool cursor unusable; sending the spool again from its oldest segment", spool=str(self.dir),
                    cursor=f"{cursor.seq} {cursor.offset}")
        return Position(min(self._sizes), 0)

    def _load_cursor(self) -> Position:
        try:
            seq, offset = (self.dir / "cursor").read_text().split()
            return Position(int(seq), int(offset))
        except (FileNotFoundError, ValueError):
            first = self._segments()
            return Position(first[0] if first else 0, 0)

    def _scan(self, seq: int, mark: int | None = None) -> int | None:
        """Size and points of a segment; a torn last record (crash mid-write) is cut off.
        Returns the points of the records before byte ``mark`` when ``mark`` is a record
        boundary (0 and the end included), else None: the cursor's segment is read once at
        open, not walked again to check and count the cursor."""
        path = self.dir / _segment_name(seq)
        data = path.read_bytes()
        offset = points = 0
        before = None
        while offset + _HEADER.size <= len(data):
            if offset == mark:
                before = points
            length, count, crc = _HEADER.unpack_from(data, offset)
            payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                break
            offset += _HEADER.size + length
            points += count
        if offset == mark:
            before = points
        if offset != len(data):
            health.count(f"{self.name}.spool.torn_bytes", len(data) - offset)
            log.warning("spool segment had a torn record; cut off", segment=path.name, bytes=len(data) - offset)
            os.truncate(path, offset)
        self._sizes[seq] = offset
        self._points[seq] = points
        return before

    def _read_at(self, position: Position) -> Record | None:
        path = self.dir / _segment_name(position.seq)
        try:
            with open(path, "rb") as handle:
                handle.seek(position.offset)
                header = handle.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return None
                length, _count, crc = _HEADER.unpack(header)
                payload = handle.read(length)
        except FileNotFoundError:
            return None
        if len(payload) < length or zlib.crc32(payload) != crc:
            return None
        end = Position(position.seq, position.offset + _HEADER.size + length)
        return Record(start=position, end=end, lines=payload.split(b"\n"))

    def _sent_before(self, seq: int) -> int:
        """Points of segment ``seq`` already accepted (the cursor is inside it)."""
        return self._sent if self._cursor.seq == seq else 0

    def _pending_points(self) -> int:
        return sum(self._points.values()) - (self._sent if self._cursor.seq in self._points else 0)

    def _roll(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._write_seq += 1
        self._fd = os.open(self.dir / _segment_name(self._write_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes[self._write_seq] = 0
        self._points[self._write_seq] = 0

    def _drop_before_cursor(self) -> None:
        for seq in [s for s in self._sizes if s < self._cursor.seq]:
            (self.dir / _segment_name(seq)).unlink(missing_ok=True)
            del self._sizes[seq], self._points[seq]

    def _enforce_bound(self) -> None:
        while sum(self._sizes.values()) > self.max_bytes and len(self._sizes) > 1:
            oldest = min(self._sizes)
            lost = self._points[oldest] - self._sent_before(oldest)
            (self.dir / _segment_name(oldest)).unlink(missing_ok=True)
            del self._sizes[oldest], self._points[oldest]
            self._cursor = Position(min(self._sizes), 0)
            self._sent = 0
            health.count(f"{self.name}.spool.dropped_points", lost)
            if time.monotonic() - self._last_drop_log >= 10.0:  # counted every time, logged at most every 10 s
                self._last_drop_log = time.monotonic()
                log.warning("spool full: dropping the oldest unsent points", spool=str(self.dir), points=lost,
                            max_bytes=self.max_bytes)

    def _publish(self) -> None:
        health.gauge(f"{self.name}.spool.points", self._pending_points())
        health.gauge(f"{self.name}.spool.bytes", sum(self._sizes.values()))


# -- sending a spool -------------------------------------------------------------------


class Rejected(Exception):
    """The receiver refused the data itself (e.g. HTTP 400/413/422): resending cannot help."""


class SpoolSender:
    """Appends batches of lines to a :class:`Spool` and sends them, in order, from one thread.

    A networked sink supplies only ``send(body)`` (one request; raises :class:`Rejected`
    when the receiver refuses the data itself, anything else to be retried). The thread
    sends ``batch_size`` points at once, or whatever waits once the oldest of it has
    waited ``flush_interval`` seconds, so a quiet stream still arrives within about
    ``flush_interval`` s; failures are retried by the one :class:`~netmon.retry.Backoff`
    policy while points stay on disk. Health counters: ``<name>.write.{points,requests,
    errors,retries,rejected_points,seconds}``, gauge ``<name>.write.latency_ms``.
    """

    def __init__(self, spool: Spool, send: Callable[[bytes], None], batch_size: int, flush_interval: float,
                 backoff: Backoff) -> None:
        self.spool = spool
        self.name = spool.name
        self._send_body = send
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.backoff = backoff
        self._wake = threading.Condition()
        self._closing = False
        self._urgent = False
        self._deadline = math.inf
        self._waiting_since: float | None = time.monotonic() if spool.pending_points() else None
        for counter in ("write.errors", "write.retries", "write.rejected_points", "spool.dropped_points"):
            health.count(f"{self.name}.{counter}", 0)  # present from the start: dashboards show 0, not "no data"
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-sender", daemon=True)
        self._thread.start()

    def append(self, lines: list[bytes]) -> None:
        """Spool ``lines`` (in records of at most ``batch_size``) and wake the sender; never waits
        for the network. A spool that cannot be written (disk full) counts the loss and goes on."""
        for start in range(0, len(lines), self.batch_size):
            chunk = lines[start : start + self.batch_size]
            try:
                self.spool.append(chunk)
            except OSError as exc:
                health.count(f"{self.name}.spool.dropped_points", len(chunk))
                log.error("cannot spool points; they are lost", points=len(chunk), spool=str(self.spool.dir),
                          error=str(exc))
        with self._wake:
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
            self._wake.notify()  # the sender may be asleep with no deadline: give it one

    def flush(self, timeout: float) -> bool:
        """Send everything spooled now, waiting up to ``timeout`` seconds; True when the spool is empty."""
        deadline = time.monotonic() + timeout
        with self._wake:
            self._urgent = True
            self._wake.notify()
        while self.spool.pending_points() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        with self._wake:
            self._urgent = False
        return not self.spool.pending_points()

    def close(self, timeout: float) -> int:
        """Keep sending for up to ``timeout`` seconds (at least one more attempt), then stop the
        thread and release the spool; returns the points left on disk for the next start."""
        deadline = time.monotonic() + timeout
        with self._wake:
            self._closing = True
            self._deadline = max(deadline, time.monotonic() + min(1.0, timeout))
            self._wake.notify()
        self._thread.join()
        left = self.spool.pending_points()
        self.spool.close()
        return left

    def _due(self) -> bool:
        if self._closing or (self._urgent and self.spool.pending_points()):
            return True
        if self._waiting_since is None:
            return False
        full = self.spool.pending_points() >= self.batch_size
        return full or time.monotonic() - self._waiting_since >= self.flush_interval

    def _loop(self) -> None:
        failures = 0
        while True:
            with self._wake:
                while not self._due():
                    wait = None if self._waiting_since is None else (
                        self._waiting_since + self.flush_interval - time.monotonic())
                    self._wake.wait(timeout=wait if wait is None else max(wait, 0.001))
                if self._closing and time.monotonic() >= self._deadline:
                    return
            records = self.spool.read(self.batch_size)
            if not records:
                with self._wake:
                    self._waiting_since = None
                    if self._closing:
                        return
                continue
            if self._send(records):
                failures = 0
                with self._wake:
                    if not self.spool.pending_points():
                        self._waiting_since = None
            else:
                failures += 1
                health.count(f"{self.name}.write.retries")
                self._pause(self.backoff.delay(failures))

    def _send(self, records: list[Record]) -> bool:
        """One request with these records; True when they left the spool (accepted or refused)."""
        lines = [line for record in records for line in record.lines]
        self.spool.sync()
        started = time.monotonic()
        try:
            self._send_body(b"\n".join(lines))
        except Rejected as exc:
            health.count(f"{self.name}.write.rejected_points", len(lines))
            log.error("receiver refused points; they are dropped (fix the cause)", sink=self.name, points=len(lines),
                      reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - any transport failure means "try again later"
            health.count(f"{self.name}.write.errors")
            log.warning("write failed; points stay spooled", sink=self.name, points=len(lines),
                        error=type(exc).__name__, detail=redact(str(exc))[:200])
            return False
        else:
            latency = time.monotonic() - started
            health.count(f"{self.name}.write.points", len(lines))
            health.count(f"{self.name}.write.requests")
            health.gauge(f"{self.name}.write.latency_ms", latency * 1000.0)
            health.count(f"{self.name}.write.seconds", latency)  # / write.requests = mean latency
        self.spool.commit(records)
        return True

    def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds between attempts, cut short by close() at its deadline."""
        with self._wake:
            end = min(time.monotonic() + delay, self._deadline)
            while time.monotonic() < end:
                self._wake.wait(timeout=end - time.monotonic())
                end = min(end, self._deadline)
