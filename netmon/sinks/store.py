"""The embedded default store (sink "store"): SQLite, one file, no server.

Tables (schema version in ``meta``):

* ``intervals``: one row per host-interval: ``host, grp, role, start, end``,
  ``score`` (the worst of the interval's scores), the features reports rank hosts by
  as REAL columns (:data:`COLUMN_FEATURES`; NULL = unknown, NaN in numpy), every other
  :data:`netmon.batch.FEATURES` value packed in one BLOB ``features`` in the layout
  ``layout`` (:mod:`netmon.sinks.store_rows`), and one ``score_<name>`` column per
  detector score; primary key (host, start), so a replay run twice replaces rather
  than doubles.
* ``layouts``: the feature names each layout id packs (JSON list).
* ``findings``: the explained findings, evidence as JSON; unique per (host, start,
  detector).
* ``inputs``: the files replayed (path, first and last event time seen), so an
  evidence report can find the pcap that holds a host's packets.

Retention is in event time: at each commit (every second at most, and at
close), rows that ended more than
``retention_days`` before the newest interval stored are deleted, so a replay of
last month's capture keeps its own month. Columns for scores added later are added
to an existing file when first written; features added later get a new layout.

Writes are one ``executemany`` per interval over tuples built from numpy columns, in
one transaction per commit. The file uses write-ahead logging with
``synchronous=NORMAL``: a power cut (not a crash of netmon, which loses nothing
committed) can lose the last commits, at most about a second of intervals, never
corrupt the file. A file of schema 1 (one REAL column per feature, netmon before
the packed layout) is converted in place when a writer opens it, in one transaction
(a crash midway leaves it as it was; a feature value edited into text by hand becomes
unknown, counted as ``store.convert.unreadable_values``); readers read either layout.

Readers (report code) use :class:`StoreReader`, which opens the file read-only
and returns plain dicts; they never touch the writer.

Faults never end a run. A store file that is not SQLite or is damaged is moved
aside as ``<name>.corrupt-<UTC time>`` (with its ``-wal``/``-shm``), logged and
counted (``store.corrupt``), and a fresh store is created, as for checkpoints.
A write or commit that fails (disk full, I/O error) is rolled back, counted
(``store.write_failed``) and retried after a delay of the one retry policy
(:data:`RETRY`: 1 s doubling to 10 s, jittered) at the next write or close; until then
the scored intervals wait in memory, at most ``buffer_bytes`` of them (estimated as
for every sink's queue, :func:`netmon.runtime.sinks.scored_bytes`; the oldest are
dropped beyond that, their host-intervals counted as ``store.dropped``; the gauges
``store.pending_bytes`` and ``store.pending_rows`` show what waits).
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections import deque
from collections.abc import Iterable
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
from pydantic import Field

from netmon import health
from netmon.batch import FEATURES, Scored
from netmon.config import ConfigError, SinkOptions, load
from netmon.paths import creatable, data_path
from netmon.retry import Backoff
from netmon.runtime.sinks import scored_bytes
from netmon.sinks import store_rows

log = structlog.get_logger(__name__)

def default_path() -> str:
    """The store when the config names none: ``netmon.db`` in the data directory
    (:func:`netmon.paths.data_dir`), never relative to the working directory."""
    return data_path("netmon.db")


#: the default store as this process started (help texts); code calls default_path()
DEFAULT_PATH = default_path()
SCHEMA_VERSION = 2
#: Features kept as their own REAL columns (reports rank and sum them in SQL); the
#: others are packed in the ``features`` BLOB.
COLUMN_FEATURES = ("requests_out", "instances", "rate_vs_poll")
#: Bytes per SQLite page of a new store: 16 KiB pages write ~10 % faster than the 4 KiB
#: default for rows of ~200 bytes (fewer page splits and B-tree levels).
PAGE_SIZE = 16384
#: Rows converted per statement when a schema-1 file is converted.
MIGRATE_ROWS = 50_000
#: Seconds (wall clock) between commits: a replay writes thousands of intervals a
#: second, a live run one a minute; readers see data at most this late.
COMMIT_EVERY = 1.0
#: Delays (wall clock) after failed writes before the store is tried again: the one retry
#: policy of every sink, 1 s doubling to 10 s (a live run writes once a minute anyway).
RETRY = Backoff(1.0, 10.0)
_KEY_COLUMNS = ("host", "grp", "role", "start", "end")
_ROW_COLUMNS = (*_KEY_COLUMNS, "score", *COLUMN_FEATURES, "layout", "features")
_PACKED = [name for name in FEATURES if name not in COLUMN_FEATURES]


class Config(SinkOptions):
    """``[[sinks]] type = "store"``."""

    type: Literal["store"] = "store"
    path: str = Field(default_factory=default_path,
                      description="SQLite file; default netmon.db in the data directory ($NETMON_DATA_DIR, "
                                  "/var/lib/netmon for root and under systemd, else ~/.local/share/netmon)")
    retention_days: float = Field(30.0, gt=0, description="days of host-intervals and findings kept (event time)")
    buffer_bytes: int = Field(
        64 << 20, ge=1 << 16,
        description="bytes of scored intervals (an estimate) held in memory while the store cannot be written (disk full)",
    )


class StoreError(RuntimeError):
    """The store file cannot be opened or is not a netmon store. ``corrupt``: the file itself
    is bad (not SQLite, damaged); ``transient``: the disk is full or failing, worth retrying;
    neither: out of reach (permissions, no directory), a fault in the config."""

    def __init__(self, message: str, exc: sqlite3.Error | None = None) -> None:
        super().__init__(message)
        self.corrupt = exc is not None and _corrupt(exc)
        self.transient = exc is not None and _transient(exc)


def _transient(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed for want of space or a failing disk (worth trying again later)."""
    name = getattr(exc, "sqlite_errorname", "")
    return name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR")


def _corrupt(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged or not a database (not a transient fault)."""
    name = getattr(exc, "sqlite_errorname", "")
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or (
        isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError) and not name
    )


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _score_column(name: str) -> str:
    return "score_" + re.sub(r"[^0-9a-zA-Z_]", "_", name)


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            if not path.exists():
                raise StoreError(f"{path}: no netmon store here (run `netmon replay` first, or pass --db)")
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path)
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only in a new file
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.row_factory = sqlite3.Row
        return db
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the store: {exc}", exc) from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the store's directory: {exc.strerror or exc}") from None


def _floats(values: tuple[Any, ...], name: str, path: Path) -> np.ndarray:
    """One feature column of a schema-1 file as floats, NULL as NaN. SQLite keeps text or bytes
    put in a REAL column by hand as they are: such a value, no number, is converted as unknown
    (NaN), counted, instead of stopping the store from opening."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    out = np.full(len(values), np.nan)
    unreadable = 0
    for i, value in enumerate(values):
        try:
            out[i] = math.nan if value is None else float(value)
        except (TypeError, ValueError):
            unreadable += 1
    health.count("store.convert.unreadable_values", unreadable)
    log.warning("store conversion: values that are not numbers kept as unknown", path=str(path), feature=name,
                values=unreadable)
    return out


def _literal(value: Any) -> str | None:
    """``value`` as SQL text that SQLite reads back exactly (an integer; a float with no
    fraction below 2**53, kept REAL by its ".0"), else None: SQLite's own decimal parsing
    may round other floats differently from Python, so those are bound."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer() and abs(value) < 2.0 ** 53:
        return f"{int(value)}.0"
    return None


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


class Store:
    """The writer: creates the schema, appends scored intervals, applies retention."""

    def __init__(self, path: str | Path | None = None, retention_days: float = 30.0) -> None:
        self.path = Path(path or default_path())
        self.retention = retention_days * 86400.0
        self.db = _connect(self.path, readonly=False)
        self.first = math.inf
        self.last = -math.inf
        self._committed = time.monotonic()
        self._uncommitted: list[Scored] = []
        try:
            self._schema()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{self.path}: not a usable netmon store: {exc}", exc) from None
        except StoreError:
            self.db.close()
            raise

    def _schema(self) -> None:
        """Create the tables, or convert a schema-1 file, in one transaction."""
        self.db.execute("BEGIN")
        try:
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            stored = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if stored is not None and stored[0] not in ("1", str(SCHEMA_VERSION)):
                raise StoreError(f"{self.path}: store schema {stored[0]!r} is not one this netmon knows "
                                 f"(it writes {SCHEMA_VERSION}); a newer netmon made it, or pass another --db / path")
            old = _columns(self.db, "intervals")
            convert = bool(old) and "features" not in old  # a schema-1 table
            if convert:
                self.db.execute("DROP INDEX IF EXISTS intervals_end")
                self.db.execute("ALTER TABLE intervals RENAME TO intervals_v1")
            self._create()
            self._known = set(_columns(self.db, "intervals"))
            self._layout = self._layout_id(_PACKED)
            if convert:
                self._migrate(old)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            self.db.commit()
        except BaseException:
            try:
                self.db.rollback()
            except sqlite3.Error:
                pass  # a damaged file: the error that got here is the one to report
            raise

    def _create(self) -> None:
        columns = ", ".join(f"{_q(name)} REAL" for name in COLUMN_FEATURES)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS intervals (host TEXT NOT NULL, grp TEXT, role TEXT, start REAL NOT NULL,"
            f' "end" REAL, score REAL, {columns}, layout INTEGER NOT NULL, features BLOB NOT NULL,'
            " PRIMARY KEY (host, start))"
        )
        self.db.execute('CREATE INDEX IF NOT EXISTS intervals_end ON intervals ("end")')
        self.db.execute("CREATE TABLE IF NOT EXISTS layouts (id INTEGER PRIMARY KEY, features TEXT NOT NULL UNIQUE)")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS findings (host TEXT NOT NULL, grp TEXT, start REAL NOT NULL, \"end\" REAL,"
            " detector TEXT NOT NULL, severity TEXT, score REAL, server TEXT, explanation TEXT, evidence TEXT,"
            " PRIMARY KEY (host, start, detector))"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS findings_end ON findings (\"end\")")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS inputs (path TEXT NOT NULL, first REAL, last REAL, recorded REAL,"
            " PRIMARY KEY (path, first))"
        )

    def _layout_id(self, names: list[str]) -> int:
        """The id of the layout packing ``names`` in this order, registered when new."""
        text = json.dumps(names)
        self.db.execute("INSERT OR IGNORE INTO layouts (features) VALUES (?)", (text,))
        return int(self.db.execute("SELECT id FROM layouts WHERE features = ?", (text,)).fetchone()[0])

    def _migrate(self, old: list[str]) -> None:
        """Pack the rows of a schema-1 table (renamed ``intervals_v1``) into ``intervals``, then drop it.
        Its feature columns, whatever they were, become one layout of their own."""
        scores = [c for c in old if c.startswith("score_")]
        plain = (*_KEY_COLUMNS, "score", *COLUMN_FEATURES)
        packed = [c for c in old if c not in plain and c not in scores]
        self._add_columns(scores)
        layout = self._layout_id(packed)
        total = self.db.execute("SELECT count(*) FROM intervals_v1").fetchone()[0]
        log.info("converting the store to the packed layout", path=str(self.path), rows=total)
        selected = [_q(c) if c in old else "NULL" for c in plain] + [_q(c) for c in (*packed, *scores)]
        cursor = self.db.execute(f"SELECT {', '.join(selected)} FROM intervals_v1")
        done = 0
        while rows := cursor.fetchmany(MIGRATE_ROWS):
            columns = list(zip(*rows))
            features = {name: _floats(columns[len(plain) + j], name, self.path) for j, name in enumerate(packed)}
            self._insert([*_ROW_COLUMNS, *scores], zip(
                *columns[:len(plain)], repeat(layout), store_rows.pack(features, packed, len(rows)),
                *columns[len(plain) + len(packed):]))
            done += len(rows)
            log.info("store conversion progress", path=str(self.path), rows=done, of=total)
        self.db.execute("DROP TABLE intervals_v1")

    def _add_columns(self, names: list[str]) -> bool:
        """Add the score columns not in the table yet; whether any was added."""
        missing = [name for name in names if name not in self._known]
        for name in missing:
            self.db.execute(f"ALTER TABLE intervals ADD COLUMN {_q(name)} REAL")
            self._known.add(name)
        return bool(missing)

    def _insert(self, names: list[str], rows: Iterable[tuple[Any, ...]], literals: dict[str, str] | None = None) -> None:
        """Insert ``rows`` (values of ``names``); ``literals``: columns with the same value in
        every row, as SQL text (:func:`_literal`), which SQLite then need not bind row by row."""
        literals = literals or {}
        columns = ", ".join(_q(c) for c in (*names, *literals))
        values = ", ".join(["?"] * len(names) + list(literals.values()))
        self.db.executemany(f"INSERT OR REPLACE INTO intervals ({columns}) VALUES ({values})", rows)

    def write(self, scored: Scored) -> None:
        """Store one closed interval: every host's features and scores, and the findings.

        Raises sqlite3.Error when SQLite cannot (disk full); :meth:`rollback` then
        hands back what was written but not yet committed."""
        iv = scored.intervals
        n = len(iv)
        self.first = min(self.first, iv.start)
        self.last = max(self.last, iv.end)
        score_columns = {_score_column(name): values for name, values in scored.scores.items()}
        if self._add_columns(list(score_columns)):
            self.db.commit()
            self._uncommitted.clear()
        worst = np.zeros(n)
        for values in scored.scores.values():
            worst = np.fmax(worst, np.asarray(values, dtype=np.float64))
        unknown = np.full(n, np.nan)
        # rows go in in host order: the (host, start) index takes them 2-3 times faster than in the
        # aggregator's hash order, which lands every row on another page of the index
        order = np.argsort(np.asarray(iv.host), kind="stable")

        def column(values: Any, dtype: Any = None) -> list[Any]:
            return np.asarray(values, dtype=dtype)[order].tolist()

        same = {"start": iv.start, "end": iv.end, "layout": self._layout}
        literals = {name: text for name, value in same.items() if (text := _literal(value)) is not None}
        bound = [name for name in same if name not in literals]
        # a failing statement undoes only itself: intervals written before it stay in the open transaction
        self._insert(["host", "grp", "role", *bound, "score", *COLUMN_FEATURES, "features", *score_columns], zip(
            column(iv.host), column(iv.group), column(iv.role), *(repeat(same[name]) for name in bound),
            column(worst), *(column(iv.features.get(name, unknown), np.float64) for name in COLUMN_FEATURES),
            store_rows.pack(iv.features, _PACKED, n, order), *(column(v, np.float64) for v in score_columns.values()),
        ), literals)
        self.db.executemany(
            "INSERT OR REPLACE INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(f.host, f.group, f.start, f.end, f.detector, f.severity, f.score, f.server, f.explanation,
              json.dumps(f.evidence, default=float)) for f in scored.findings],
        )
        self._uncommitted.append(scored)
        if time.monotonic() - self._committed >= COMMIT_EVERY:
            self.commit()
        health.count("store.host_intervals", n)
        health.count("store.findings", len(scored.findings))

    def _expire(self) -> None:
        newest = self.db.execute('SELECT max("end") FROM intervals').fetchone()[0]
        if newest is None:
            return
        cutoff = newest - self.retention
        removed = self.db.execute('DELETE FROM intervals WHERE "end" < ?', (cutoff,)).rowcount
        removed += self.db.execute('DELETE FROM findings WHERE "end" < ?', (cutoff,)).rowcount
        self.db.execute("DELETE FROM inputs WHERE last < ?", (cutoff,))
        if removed:
            health.count("store.expired", removed)

    def commit(self) -> None:
        """Apply retention and make everything written so far durable and visible to readers."""
        self._expire()
        self.db.commit()
        self._committed = time.monotonic()
        self._uncommitted.clear()

    def rollback(self) -> list[Scored]:
        """Undo the open transaction after a failure; the intervals it held, to write again."""
        try:
            self.db.rollback()
        except sqlite3.Error:
            pass  # the transaction is gone either way
        undone, self._uncommitted = self._uncommitted, []
        return undone

    def record_input(self, path: str, first: float, last: float) -> None:
        """Remember that ``path`` was replayed and covered event times ``first``..``last``."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO inputs VALUES (?, ?, ?, ?)", (path, first, last, time.time()))

    def close(self) -> None:
        self.commit()
        self.db.close()


class StoreSink:
    """The sink plug-in: a :class:`Store` that also records the pcap files of the run, and
    keeps a run going through a full disk or a damaged file (see the module docstring)."""

    def __init__(self, config: Config, inputs: list[str]) -> None:
        self.config = config
        self.path = Path(config.path)
        self.inputs = inputs
        self.store: Store | None = None
        self.pending: deque[tuple[Scored, int]] = deque()
        self.pending_rows = 0
        self.pending_bytes = 0
        self.retry_at = 0.0
        self.failures = 0  # writes failed in a row; 0 = the store is writable
        self._open()

    def _open(self) -> None:
        """Open (or replace a damaged) store; a full or failing disk leaves it closed, retried
        later; a store out of reach is a StoreError (a config to fix)."""
        try:
            self.store = _open_or_replace(self.path, self.config.retention_days)
        except StoreError as exc:
            if not exc.transient:
                raise
            self._failed(str(exc))

    @property
    def failing(self) -> bool:
        """Whether the last write failed (intervals are pending, a retry is scheduled)."""
        return self.failures > 0

    def _failed(self, error: str) -> None:
        delay = RETRY.delay(self.failures + 1)
        self.retry_at = time.monotonic() + delay
        health.count("store.write_failed")
        if not self.failing:
            log.error("store write failed; intervals kept in memory and retried", path=str(self.path), error=error,
                      pending=self.pending_rows, retry_in=round(delay, 1))
        self.failures += 1

    def write(self, scored: Scored) -> None:
        self._hold(scored)
        while self.pending_bytes > self.config.buffer_bytes and len(self.pending) > 1:
            dropped = self._take()
            health.count("store.dropped", len(dropped.intervals))
        if time.monotonic() >= self.retry_at:
            self._flush()
        self._publish()

    def _hold(self, scored: Scored, first: bool = False) -> None:
        """Keep ``scored`` pending (at the end, or ``first``: back at the head after a rollback)."""
        size = scored_bytes(scored)
        if first:
            self.pending.appendleft((scored, size))
        else:
            self.pending.append((scored, size))
        self.pending_rows += len(scored.intervals)
        self.pending_bytes += size

    def _take(self) -> Scored:
        """The oldest pending interval, no longer counted as pending."""
        scored, size = self.pending.popleft()
        self.pending_rows -= len(scored.intervals)
        self.pending_bytes -= size
        return scored

    def _publish(self) -> None:
        health.gauge("store.pending_bytes", self.pending_bytes)
        health.gauge("store.pending_rows", self.pending_rows)

    def _flush(self) -> bool:
        """Write every pending interval; False (and a retry scheduled) when SQLite fails."""
        if self.store is None:
            self._open()
            if self.store is None:
                return False
        scored = None
        try:
            while self.pending:
                scored = self._take()
                self.store.write(scored)
            if self.failing:
                self.store.commit()
        except sqlite3.Error as exc:
            undone = self.store.rollback()
            if scored is not None and not any(item is scored for item in undone):
                undone.append(scored)
            for item in reversed(undone):
                self._hold(item, first=True)
            if _corrupt(exc):
                self._replace(str(exc))
            self._failed(str(exc))
            return False
        if self.failing:
            log.info("store writable again; pending intervals written", path=str(self.path))
            self.failures = 0
        return True

    def _replace(self, reason: str) -> None:
        """The open store turned out damaged: set it aside; the next try starts a fresh one."""
        if self.store is not None:
            try:
                self.store.db.close()
            except sqlite3.Error:
                pass
        self.store = None
        _set_aside(self.path, reason)

    def close(self) -> None:
        if (self.pending or self.store is None) and not self._flush():
            health.count("store.lost", self.pending_rows)
            log.error("store still not writable at stop; host-intervals lost", path=str(self.path),
                      lost=self.pending_rows)
        if self.store is None:
            return
        try:
            if self.store.last > -math.inf:
                for path in self.inputs:
                    self.store.record_input(path, self.store.first, self.store.last)
            self.store.close()
        except sqlite3.Error as exc:
            log.error("store not closed cleanly", path=str(self.store.path), error=str(exc))


def _set_aside(path: Path, reason: str) -> str:
    """Move a damaged store (and its WAL files) to ``<name>.corrupt-<UTC time>``; where it went."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            os.replace(part, Path(f"{aside}{suffix}"))
    health.count("store.corrupt")
    log.error("store file damaged; moved aside, a fresh store is created", path=str(path), moved_to=str(aside),
              reason=reason)
    return str(aside)


def _open_or_replace(path: Path, retention_days: float) -> Store:
    """The store at ``path``; a damaged file is set aside and a fresh store made. Any other
    StoreError (out of reach, disk full) is raised."""
    try:
        return Store(path, retention_days)
    except StoreError as exc:
        if not exc.corrupt:
            raise
        _set_aside(path, str(exc))
    return Store(path, retention_days)


def _replayed_paths(settings: Any) -> list[str]:
    paths: list[str] = []
    for table in getattr(settings, "sources", None) or []:
        if table.type == "pcap":
            paths.extend(str(Path(p).resolve()) for p in table.paths)
    return paths


def check(config: Config) -> list[str]:
    """Problems that would stop the store (for ``netmon check-config``), without creating anything."""
    path = Path(config.path)
    if path.exists():
        try:
            StoreReader(path).close()
        except StoreError as exc:
            return [str(exc)]
    return creatable(path, "store")


def build(config: Config, settings: Any = None) -> StoreSink:
    """The sink for one ``[[sinks]] type = "store"`` table."""
    return StoreSink(config, _replayed_paths(settings))


def open_reader(db: str | None = None, config_path: str | None = None) -> "StoreReader":
    """A reader on ``db`` when given, else on the config's first store sink, else on the default file.

    A config that does not validate is a :class:`StoreError` naming the bad key.
    """
    if db is None and config_path is not None:
        try:
            settings = load(config_path)
        except ConfigError as exc:
            raise StoreError(str(exc)) from None
        db = next((str(t.path) for t in settings.sinks if t.type == "store"), None)
    return StoreReader(db or default_path())


class StoreReader:
    """Read-only queries for reports: hosts ranked by score, one host's intervals and findings.
    Reads both layouts (schema 1 as a writer left it, schema 2 packed) without changing the file."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path or default_path())
        self.db = _connect(self.path, readonly=True)
        try:
            self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            self.layouts = self._layouts()
        except (sqlite3.DatabaseError, ValueError) as exc:
            self.db.close()
            raise StoreError(f"{self.path}: not a netmon store: {exc}") from None

    def _layouts(self) -> dict[int, list[str]]:
        """The feature names of each packed layout by id (none in a schema-1 file)."""
        if not _columns(self.db, "layouts"):
            return {}
        return {row[0]: json.loads(row[1]) for row in self.db.execute("SELECT id, features FROM layouts")}

    def _row(self, row: sqlite3.Row) -> dict[str, Any]:
        """One stored host-interval as a flat dict: packed features unpacked, unknown features NaN."""
        record = dict(row)
        blob, layout = record.pop("features", None), record.pop("layout", None)
        if blob is not None:
            try:
                if layout not in self.layouts:  # a writer converted the file or added a layout since we opened it
                    self.layouts = self._layouts()
                record.update(store_rows.unpack(blob, self.layouts[layout]))
            except (KeyError, ValueError, TypeError) as exc:  # TypeError: a layout that is no list of names
                raise StoreError(f"{self.path}: the features of host {record['host']} at {record['start']} are "
                                 f"unreadable (layout {layout}: {exc}); the file is damaged") from None
        return {key: (math.nan if value is None and key in FEATURES else value) for key, value in record.items()}

    def top_hosts(self, n: int = 20) -> list[dict[str, Any]]:
        """The ``n`` hosts with the highest worst score, with their findings count and latest reason."""
        query = """
            WITH per_host AS (
                SELECT host, grp AS "group", max(role) AS role, count(*) AS intervals, max(score) AS score,
                       min(start) AS first, max("end") AS last, sum(requests_out) AS requests_out,
                       max(instances) AS instances, max(rate_vs_poll) AS rate_vs_poll
                FROM intervals GROUP BY host),
            flagged AS (
                SELECT host, count(*) AS findings, group_concat(DISTINCT detector) AS detectors
                FROM findings GROUP BY host),
            top AS (
                SELECT per_host.*, coalesce(flagged.findings, 0) AS findings, flagged.detectors
                FROM per_host LEFT JOIN flagged USING (host)
                ORDER BY score DESC, findings DESC, requests_out DESC LIMIT ?)
            SELECT top.*, (SELECT f.explanation FROM findings f WHERE f.host = top.host
                           ORDER BY f.score DESC, f.start DESC LIMIT 1) AS reason
            FROM top ORDER BY score DESC, findings DESC, requests_out DESC"""
        return [dict(row) for row in self.db.execute(query, (n,))]

    def host_intervals(self, host: str, limit: int | None = None) -> list[dict[str, Any]]:
        """A host's intervals in time order (the last ``limit`` when given), features as floats."""
        rows = self.db.execute(
            "SELECT * FROM (SELECT * FROM intervals WHERE host = ? ORDER BY start DESC LIMIT ?) ORDER BY start",
            (host, -1 if limit is None else limit),
        )
        return [self._row(row) for row in rows]

    def host_findings(self, host: str) -> list[dict[str, Any]]:
        """A host's findings in time order, evidence decoded."""
        rows = self.db.execute("SELECT * FROM findings WHERE host = ? ORDER BY start, detector", (host,))
        return [{**dict(row), "evidence": json.loads(row["evidence"] or "{}")} for row in rows]

    def inputs(self) -> list[dict[str, Any]]:
        """The files replayed into this store, with the event times they covered."""
        return [dict(row) for row in self.db.execute("SELECT * FROM inputs ORDER BY first")]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
