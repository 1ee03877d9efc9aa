"""The embedded default store (sink "store"): SQLite, one file, no server.

Tables (schema version in ``meta``):

* ``intervals``: one row per host-interval: ``host, grp, role, start, end``, one
  REAL column per :data:`netmon.batch.FEATURES` name (NULL = unknown, NaN in
  numpy), ``score`` (the worst of the interval's scores) and one ``score_<name>``
  column per detector score; primary key (host, start), so a replay run twice
  replaces rather than doubles.
* ``findings``: the explained findings, evidence as JSON; unique per (host, start,
  detector).
* ``inputs``: the files replayed (path, first and last event time seen), so an
  evidence report can find the pcap that holds a host's packets.

Retention is in event time: at each commit (every second at most, and at
close), rows that ended more than
``retention_days`` before the newest interval stored are deleted, so a replay of
last month's capture keeps its own month. Columns for features or scores added
later are added to an existing file when it is opened.

Readers (report code) use :class:`StoreReader`, which opens the file read-only
and returns plain dicts; they never touch the writer.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
from pydantic import Field

from netmon import health
from netmon.batch import FEATURES, Scored
from netmon.config import ConfigError, SinkOptions, load

log = structlog.get_logger(__name__)

DEFAULT_PATH = "netmon-data/netmon.db"
SCHEMA_VERSION = 1
#: Seconds (wall clock) between commits: a replay writes thousands of intervals a
#: second, a live run one a minute; readers see data at most this late.
COMMIT_EVERY = 1.0
_KEY_COLUMNS = ("host", "grp", "role", "start", "end")


class Config(SinkOptions):
    """``[[sinks]] type = "store"``."""

    type: Literal["store"] = "store"
    path: str = Field(DEFAULT_PATH, description="SQLite file, relative to the working directory")
    retention_days: float = Field(30.0, gt=0, description="days of host-intervals and findings kept (event time)")


class StoreError(RuntimeError):
    """The store file cannot be opened or is not a netmon store."""


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
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.row_factory = sqlite3.Row
        return db
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the store: {exc}") from None


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


class Store:
    """The writer: creates the schema, appends scored intervals, applies retention."""

    def __init__(self, path: str | Path = DEFAULT_PATH, retention_days: float = 30.0) -> None:
        self.path = Path(path)
        self.retention = retention_days * 86400.0
        self.db = _connect(self.path, readonly=False)
        self.first = math.inf
        self.last = -math.inf
        self._committed = time.monotonic()
        try:
            self._schema()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{self.path}: not a usable netmon store: {exc}") from None

    def _schema(self) -> None:
        features = ", ".join(f"{_q(name)} REAL" for name in FEATURES)
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS intervals (host TEXT NOT NULL, grp TEXT, role TEXT, start REAL NOT NULL,"
                f' "end" REAL, score REAL, {features}, PRIMARY KEY (host, start))'
            )
            self.db.execute("CREATE INDEX IF NOT EXISTS intervals_end ON intervals (\"end\")")
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
        self._known = set(_columns(self.db, "intervals"))
        self._add_columns(list(FEATURES))

    def _add_columns(self, names: list[str]) -> None:
        missing = [name for name in names if name not in self._known]
        for name in missing:
            self.db.execute(f"ALTER TABLE intervals ADD COLUMN {_q(name)} REAL")
            self._known.add(name)
        if missing:
            self.db.commit()

    def write(self, scored: Scored) -> None:
        """Store one closed interval: every host's features and scores, and the findings."""
        iv = scored.intervals
        n = len(iv)
        self.first = min(self.first, iv.start)
        self.last = max(self.last, iv.end)
        score_columns = {_score_column(name): values for name, values in scored.scores.items()}
        self._add_columns(list(score_columns))
        worst = np.zeros(n)
        for values in scored.scores.values():
            worst = np.fmax(worst, np.asarray(values, dtype=np.float64))
        names = list(_KEY_COLUMNS) + ["score"] + list(FEATURES) + list(score_columns)
        columns = [iv.host.tolist(), iv.group.tolist(), iv.role.tolist(), [iv.start] * n, [iv.end] * n,
                   worst.tolist()] + [iv.features[name].tolist() for name in FEATURES]
        columns += [np.asarray(v, dtype=np.float64).tolist() for v in score_columns.values()]
        placeholders = ", ".join("?" * len(names))
        # a failing statement undoes only itself: intervals written before it stay in the open transaction
        self.db.executemany(
            f"INSERT OR REPLACE INTO intervals ({', '.join(_q(c) for c in names)}) VALUES ({placeholders})",
            zip(*columns),
        )
        self.db.executemany(
            "INSERT OR REPLACE INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(f.host, f.group, f.start, f.end, f.detector, f.severity, f.score, f.server, f.explanation,
              json.dumps(f.evidence, default=float)) for f in scored.findings],
        )
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

    def record_input(self, path: str, first: float, last: float) -> None:
        """Remember that ``path`` was replayed and covered event times ``first``..``last``."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO inputs VALUES (?, ?, ?, ?)", (path, first, last, time.time()))

    def close(self) -> None:
        self.commit()
        self.db.close()


class StoreSink:
    """The sink plug-in: a :class:`Store` that also records the pcap files of the run."""

    def __init__(self, config: Config, inputs: list[str]) -> None:
        self.store = Store(config.path, config.retention_days)
        self.inputs = inputs

    def write(self, scored: Scored) -> None:
        self.store.write(scored)

    def close(self) -> None:
        if self.store.last > -math.inf:
            for path in self.inputs:
                self.store.record_input(path, self.store.first, self.store.last)
        self.store.close()


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
        return [] if os.access(path, os.W_OK) else [f"{path}: not writable"]
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    return [] if os.access(parent, os.W_OK) else [f"{path}: cannot create it, {parent} is not writable"]


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
    return StoreReader(db or DEFAULT_PATH)


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return {key: (math.nan if row[key] is None and key in FEATURES else row[key]) for key in row.keys()}


class StoreReader:
    """Read-only queries for reports: hosts ranked by score, one host's intervals and findings."""

    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self.path = Path(path)
        self.db = _connect(self.path, readonly=True)
        try:
            self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{self.path}: not a netmon store: {exc}") from None

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
        return [_row(row) for row in rows]

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
