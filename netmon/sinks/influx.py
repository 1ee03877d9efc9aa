"""The "influx" sink: host metrics, scores, findings and netmon's health to InfluxDB.

Two write APIs:

* ``api = "v2"``: the v2 write API through ``influxdb-client`` (InfluxDB 2.x, 3.x,
  Cloud, and the 1.8+ compatibility endpoint); url, org, bucket, token.
* ``api = "v1"``: the 1.x ``/write`` endpoint with ``requests``; url, database,
  retention policy, username/password.

Nothing is lost: :meth:`InfluxSink.write` turns a :class:`~netmon.batch.Scored` into
line protocol and appends it to the on-disk spool (:mod:`netmon.sinks.spool`): the cost
of building the lines (some 15-20 us a point) and one ``write(2)``, never a network wait;
one sender thread sends the spool
in order, in batches of ``batch_size`` points or every ``flush_interval`` seconds,
gzip-compressed, retrying with exponential backoff and jitter while the
database is down. Points carry their own (event-time) timestamps, so a resend after
a crash overwrites the same points instead of adding new ones.

Schema (documented with units in deploy/README.md): measurements ``ntp_host``,
``ntp_traffic`` (tag ``direction``), ``ntp_score``, ``ntp_finding`` (tag
``severity``) and ``netmon_health`` (tag ``collector``, and the labels of
:mod:`netmon.sinks.naming`); ``host`` is always a campus host (address or IPv6 /64).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import requests
import structlog
from pydantic import Field, SecretStr, field_validator, model_validator

from netmon import health
from netmon.batch import Finding, Scored
from netmon.config import ConfigError, SinkOptions, check_url, redact_url
from netmon.paths import creatable
from netmon.retry import Backoff
from netmon.sinks import naming
from netmon.sinks.spool import Rejected, Spool, SpoolSender

log = structlog.get_logger(__name__)

#: Measurement names.
HOST = "ntp_host"
TRAFFIC = "ntp_traffic"
SCORE = "ntp_score"
FINDING = "ntp_finding"
HEALTH = "netmon_health"


#: keys only one write API reads
V1_KEYS = frozenset({"database", "retention_policy", "username", "password", "password_env", "password_file",
                     "skip_database_creation"})
V2_KEYS = frozenset({"org", "bucket", "token", "token_env", "token_file"})


class Config(SinkOptions):
    """``[[sinks]] type = "influx"``: where to write, how to batch, where to spool."""

    type: Literal["influx"]
    name: str = Field("influx", pattern=r"^[a-z][a-z0-9_]*$",
                      description="the sink tag of this sink's health counters (influx_write_points...); "
                                  "give a second influx sink another name (and spool_dir)")
    api: Literal["v2", "v1"] = Field("v2", description="v2: InfluxDB 2.x/3.x/Cloud/1.8+; v1: InfluxDB 1.x /write")
    url: str = Field("http://localhost:8086", description="base URL of the database")
    # v2
    org: str = Field("", description="v2 organisation (ignored by InfluxDB 3.x and 1.8+)")
    bucket: str = Field("netmon", description="v2 bucket (1.8+: database/retention-policy)")
    token: SecretStr | None = Field(None, description="v2 API token; prefer token_env or token_file")
    token_env: str = Field("INFLUX_TOKEN", description="environment variable holding the token")
    token_file: str | None = Field(None, description="file holding the token (first line)")
    # v1
    database: str = Field("netmon", description="v1 database")
    retention_policy: str = Field("", description="v1 retention policy; empty = the database's default")
    username: str = Field("", description="v1 user; empty = no authentication")
    password: SecretStr | None = Field(None, description="v1 password; prefer password_env or password_file")
    password_env: str = Field("INFLUX_PASSWORD", description="environment variable holding the v1 password")
    password_file: str | None = Field(None, description="file holding the v1 password (first line)")
    skip_database_creation: bool = Field(False, description="v1: do not create the database when it is missing "
                                                            "(as Telegraf's option; the user then needs no admin right)")
    # batching and retry
    batch_size: int = Field(5000, ge=1, description="points per write request")
    flush_interval: float = Field(1.0, gt=0, description="seconds a point may wait for a batch to fill")
    gzip_level: int = Field(1, ge=0, le=9, description="gzip level of request bodies, 1 fastest, 9 smallest; 0 = off")
    timeout: float = Field(10.0, gt=0, description="seconds per write request")
    retry_initial: float = Field(0.5, gt=0, description="first retry delay, seconds (doubles per failure)")
    retry_max: float = Field(30.0, gt=0, description="longest retry delay, seconds")
    close_timeout: float = Field(10.0, ge=0, description="seconds close() keeps sending before leaving the rest spooled")
    # spool
    spool_dir: str = Field("spool/influx", description="spool directory (relative to the working directory)")
    spool_max_bytes: int = Field(1 << 30, ge=1 << 16, description="spool bound, bytes; oldest points dropped beyond")
    # self-monitoring
    health_interval: float = Field(10.0, gt=0, description="seconds between netmon_health points")

    _url = field_validator("url")(check_url)

    @model_validator(mode="after")
    def _one_api(self) -> Config:
        """Keys of the other API would be ignored without a word: a database set beside
        api = "v2" writes to the bucket anyway. Judged by value (not by which keys were
        written), so a dumped and re-validated config stays valid."""
        other = V1_KEYS if self.api == "v2" else V2_KEYS
        fields = type(self).model_fields
        if mixed := sorted(k for k in other if getattr(self, k) != fields[k].get_default(call_default_factory=True)):
            wanted = "v1" if self.api == "v2" else "v2"
            raise ValueError(f"{', '.join(mixed)} belong to api = \"{wanted}\", this table has api = \"{self.api}\": "
                             f"remove them or set api = \"{wanted}\" (one [[sinks]] table per API)")
        return self

    @model_validator(mode="after")
    def _retry_order(self) -> Config:
        if self.retry_max < self.retry_initial:
            raise ValueError(f"retry_max ({self.retry_max}) must be >= retry_initial ({self.retry_initial})")
        return self


# -- line protocol ------------------------------------------------------------------

_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})


def _key(text: str) -> str:
    """A tag key, tag value or field key escaped for line protocol."""
    return text.replace("\\", "\\\\").replace("\n", " ").translate(_KEY_ESCAPES)


def _string(text: str) -> str:
    """A string field value, quoted (newlines become spaces: one point, one line)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _ns(seconds: float) -> int:
    """UNIX seconds as integer nanoseconds, rounded to the microsecond (stable across runs)."""
    return int(round(seconds * 1e6)) * 1000


def _tags(**tags: str) -> str:
    return "".join(f",{k}={_key(v)}" for k, v in tags.items() if v)


@functools.lru_cache(maxsize=1 << 16)
def _host_tags(host: str, group: str) -> str:
    """``,host=...,group=...``, cached: the same hosts come back every interval."""
    return _tags(host=host, group=group)


def _line(measurement: str, tags: str, fields: Iterable[str], ns: int) -> bytes | None:
    body = ",".join(fields)
    if not body:
        return None
    return f"{measurement.translate(_MEASUREMENT_ESCAPES)}{tags} {body} {ns}".encode()


def _field_rows(columns: list[tuple[str, np.ndarray]], n: int) -> list[str]:
    """``key=value,...`` per row over float ``columns``; NaN and infinities left out (unknown).

    Column-wise ``map`` keeps the per-value work in C: about 0.3 us a value.
    """
    texts = []
    for key, values in columns:
        column = list(map((key + "=").__add__, map(repr, values.tolist())))
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            column[i] = ""
        texts.append(column)
    if not texts:
        return [""] * n
    return [",".join(filter(None, row)) for row in zip(*texts)]


def split_direction(name: str) -> tuple[str, str]:
    """Feature name -> (direction, field): ``requests_out`` -> ("out", "requests"); no suffix -> ("", name)."""
    for direction in ("out", "in"):
        if name.endswith("_" + direction):
            return direction, name[: -len(direction) - 1]
    return "", name


def host_lines(scored: Scored) -> list[bytes]:
    """``ntp_host`` (features without a direction, and role) and ``ntp_traffic`` (per direction)."""
    iv = scored.intervals
    n, ns = len(iv), _ns(iv.start)
    by_direction: dict[str, list[tuple[str, np.ndarray]]] = {"": [], "out": [], "in": []}
    for name, column in iv.features.items():
        direction, field = split_direction(name)
        by_direction[direction].append((_key(field), np.asarray(column, dtype=np.float64)))
    tags = [_host_tags(str(h), str(g)) for h, g in zip(iv.host.tolist(), iv.group.tolist())]
    roles = [f"role={_string(str(r))}" for r in iv.role.tolist()]
    plain = _field_rows(by_direction[""], n)
    lines = [_line(HOST, tags[i], [f for f in (plain[i], roles[i]) if f], ns) for i in range(n)]
    for direction in ("out", "in"):
        fields = _field_rows(by_direction[direction], n)
        suffix = _tags(direction=direction)
        lines += [_line(TRAFFIC, tags[i] + suffix, [fields[i]] if fields[i] else [], ns) for i in range(n)]
    return [line for line in lines if line]


def score_lines(scored: Scored) -> list[bytes]:
    """``ntp_score``: one field per score name, and ``max`` over them (the host's worst)."""
    iv = scored.intervals
    if not scored.scores or not len(iv):
        return []
    names = sorted(scored.scores)
    matrix = np.vstack([np.asarray(scored.scores[n], dtype=np.float64) for n in names])
    worst = np.where(np.isfinite(matrix), matrix, -np.inf).max(axis=0)
    fields = _field_rows([(_key(n), matrix[k]) for k, n in enumerate(names)] + [("max", worst)], len(iv))
    ns = _ns(iv.start)
    lines = [_line(SCORE, _host_tags(str(h), str(g)), [fields[i]] if fields[i] else [], ns)
             for i, (h, g) in enumerate(zip(iv.host.tolist(), iv.group.tolist()))]
    return [line for line in lines if line]


def finding_time(finding: Finding) -> int:
    """A finding's timestamp, ns: its interval start plus 0-999 ms taken from its detector
    and server, so two findings of one host and interval are two points (the tags stay
    host, group, severity) and a resend of the same finding overwrites it. Whole
    milliseconds, because some InfluxDB-compatible stores keep no finer time."""
    offset_ms = zlib.crc32(f"{finding.detector}|{finding.server}".encode()) % 1000
    return _ns(finding.start) + offset_ms * 1_000_000


def finding_lines(findings: list[Finding]) -> list[bytes]:
    """``ntp_finding``: one point per finding; text fields for the table and alerts."""
    lines = []
    for f in findings:
        fields = [
            f"detector={_string(f.detector)}",
            f"score={float(f.score)!r}" if math.isfinite(f.score) else "score=0.0",
            f"explanation={_string(f.explanation)}",
            f"server={_string(f.server)}",
            f"evidence={_string(json.dumps(f.evidence, sort_keys=True, default=str))}",
            f"end={float(f.end)!r}",
        ]
        tags = _tags(host=f.host, group=f.group, severity=f.severity)
        lines.append(_line(FINDING, tags, fields, finding_time(f)))
    return [line for line in lines if line]


def health_lines(now: float, collector: str | None = None) -> list[bytes]:
    """``netmon_health``: every counter and gauge of :mod:`netmon.health` at wall time ``now``,
    tagged ``collector`` = this machine's name (``host`` is a campus host everywhere else, and
    Telegraf's own tag), so several collectors writing to one database stay apart. Names and
    labels follow :mod:`netmon.sinks.naming` (one point per label set: a label is a tag);
    counters of things are integers (``5i``), gauges and counters of seconds are floats."""
    counters = health.counters_with_prefix("")
    points: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for health_name, value in sorted(health.snapshot().items()):
        if not math.isfinite(value):
            continue
        name = naming.split(health_name)
        if health_name in counters and naming.is_integer_counter(name):
            text = f"{name.name}={int(round(value))}i"
        else:
            text = f"{name.name}={float(value)!r}"
        points.setdefault(tuple(sorted(name.labels.items())), []).append(text)
    base = _tags(collector=collector or socket.gethostname())
    lines = [_line(HEALTH, base + _tags(**dict(labels)), fields, _ns(now)) for labels, fields in points.items()]
    return [line for line in lines if line]


def scored_lines(scored: Scored) -> list[bytes]:
    """Every point one scored interval becomes."""
    return host_lines(scored) + score_lines(scored) + finding_lines(scored.findings)


# -- transports ----------------------------------------------------------------------


class Transport(Protocol):
    def send(self, body: bytes) -> None: ...

    def close(self) -> None: ...


class CredentialError(OSError):
    """A credential file that cannot be read. The message names the file and why, never a
    byte of what it holds; callers add which sink it is."""


def _secret(value: SecretStr | None, env: str, path: str | None) -> str:
    """A credential from a file, the config or the environment, in that order; never logged."""
    if path:
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            raise CredentialError(f"cannot read the credential file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:  # its message would quote a byte of the secret
            raise CredentialError(f"cannot read the credential file {path}: it is not UTF-8 text") from None
        return text.splitlines()[0].strip() if text else ""
    if value is not None:
        return value.get_secret_value()
    return os.environ.get(env, "")


_PERMANENT = {400, 413, 422}


def _compress(body: bytes, level: int) -> tuple[bytes, dict[str, str]]:
    """The request body and its Content-Encoding header: gzip at ``level`` (0 = none).

    Level 1 compresses this line protocol about 3.5x at ~50 MB/s; level 9 only reaches
    4.3x at ~6 MB/s, which would make compression the sender's bottleneck.
    """
    if not level:
        return body, {}
    return gzip.compress(body, compresslevel=level), {"Content-Encoding": "gzip"}


class V2Transport:
    """The v2 write API through influxdb-client's WriteService, synchronous (the sender
    thread is the asynchronous part); the body is gzipped here at the configured level."""

    def __init__(self, config: Config) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.service.write_service import WriteService

        self._client = InfluxDBClient(
            url=config.url,
            token=_secret(config.token, config.token_env, config.token_file),
            org=config.org or "-",
            timeout=int(config.timeout * 1000),
        )
        self._service = WriteService(self._client.api_client)
        self._bucket, self._org, self._level = config.bucket, config.org or "-", config.gzip_level

    def send(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException

        data, headers = _compress(body, self._level)
        try:
            self._service.post_write(org=self._org, bucket=self._bucket, body=data, precision="ns",
                                     content_type="text/plain; charset=utf-8",
                                     content_encoding=headers.get("Content-Encoding", "identity"))
        except ApiException as exc:
            if exc.status in _PERMANENT:
                raise Rejected(f"HTTP {exc.status}: {str(exc.body)[:300]}") from None
            raise

    def close(self) -> None:
        self._client.close()


class DatabaseError(ConfigError):
    """The InfluxDB 1.x database is missing and cannot be created (no admin right, or
    skip_database_creation): a setting to fix, not an outage to wait out (every write would
    get 404 and the points would never leave the spool)."""


def _v1_session(config: Config) -> requests.Session:
    """A requests session with the v1 user's credentials (if any)."""
    session = requests.Session()
    if config.username:
        session.auth = (config.username, _secret(config.password, config.password_env, config.password_file))
    return session


def _influxql(session: requests.Session, config: Config, statement: str) -> str | None:
    """Run one InfluxQL management statement (POST ``/query``); None when it succeeded,
    else why not (InfluxDB's own error, e.g. "requires admin privilege")."""
    response = session.post(config.url.rstrip("/") + "/query", params={"q": statement},
                            timeout=min(config.timeout, 5.0))
    try:
        body = response.json()
        error = body.get("error") or next((r["error"] for r in body.get("results", []) if "error" in r), None)
    except (ValueError, AttributeError, TypeError):
        error = response.text[:200] or response.reason
    if response.status_code >= 400 or error:
        return f"HTTP {response.status_code}: {error or response.reason}"
    return None


def _quoted(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def database_problem(config: Config, session: requests.Session) -> tuple[str, bool] | None:
    """Why the v1 database cannot take this user's points, and whether creating the database is
    the fix (it is missing); None when it can (or the server is no InfluxDB 1.x to ask).

    ``SHOW DATABASES`` lists what the user may use; a database it leaves out is probed with
    an empty write, which InfluxDB 1.x answers 404 when the database is missing and 403 when
    the user may not write to it. Raises requests.RequestException when the server is silent."""
    who = f"user {config.username!r}" if config.username else "without credentials"
    listing = session.get(config.url.rstrip("/") + "/query", params={"q": "SHOW DATABASES"},
                          timeout=min(config.timeout, 5.0))
    if listing.status_code == 401:
        return f"{redact_url(config.url)} refuses the credentials of {who} (HTTP 401)", False
    try:
        series = listing.json()["results"][0].get("series", [])
        names = {row[0] for item in series for row in item.get("values", [])}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        log.info("cannot list InfluxDB databases; writing anyway", url=redact_url(config.url),
                 status=listing.status_code)
        return None
    if config.database in names:
        return None
    probe = session.post(config.url.rstrip("/") + "/write", params={"db": config.database}, data=b"",
                         timeout=min(config.timeout, 5.0))
    if probe.status_code == 404:
        return f"database {config.database!r} does not exist on {redact_url(config.url)}", True
    if probe.status_code == 403:
        return (f"{who} may not write to database {config.database!r}: as an admin, "
                f"GRANT WRITE ON {_quoted(config.database)} TO {_quoted(config.username)}"), False
    return None


def ensure_database(config: Config, session: requests.Session) -> None:
    """Create the v1 database when it is missing, as Telegraf does (``CREATE DATABASE`` is
    idempotent); DatabaseError when it cannot be created or skip_database_creation is set.
    Raises requests.RequestException when the server does not answer (then the spool waits)."""
    found = database_problem(config, session)
    if found is None:
        return
    problem, missing = found
    if not missing:  # credentials or a grant: fixable while netmon runs, so the points wait in the spool
        log.error("the database refuses netmon's points; they wait in the spool", problem=problem)
        return
    fix = (f'create it as an admin (CREATE DATABASE {_quoted(config.database)})'
           + (f" and grant the user write access (GRANT WRITE ON {_quoted(config.database)} TO "
              f"{_quoted(config.username)})" if config.username else ""))
    if config.skip_database_creation:
        raise DatabaseError(f"influx sink: {problem} and skip_database_creation = true: {fix}")
    refused = _influxql(session, config, f"CREATE DATABASE {_quoted(config.database)}")
    if refused:
        raise DatabaseError(f"influx sink: {problem} and cannot be created ({refused}): {fix}")
    log.info("created the InfluxDB database", database=config.database, url=redact_url(config.url))


class V1Transport:
    """The InfluxDB 1.x ``/write`` endpoint over requests. A 404 (database not found: never
    created because the server was down at start, or dropped since) creates the database
    and sends again, or raises DatabaseError naming the fix."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._url = config.url.rstrip("/") + "/write"
        self._params = {"db": config.database, "precision": "ns"}
        if config.retention_policy:
            self._params["rp"] = config.retention_policy
        self._session = _v1_session(config)
        self._level = config.gzip_level
        self._timeout = config.timeout

    def send(self, body: bytes) -> None:
        data, headers = _compress(body, self._level)
        for attempt in (1, 2):
            response = self._session.post(self._url, params=self._params, data=data,
                                          headers={"Content-Type": "text/plain; charset=utf-8", **headers},
                                          timeout=self._timeout)
            if response.status_code != 404 or attempt == 2:
                break
            ensure_database(self._config, self._session)
        if response.status_code == 404:
            raise DatabaseError(f"influx sink: HTTP 404 from {redact_url(self._url)}: {response.text[:200]}")
        if response.status_code in _PERMANENT:
            raise Rejected(f"HTTP {response.status_code}: {response.text[:300]}")
        response.raise_for_status()

    def close(self) -> None:
        self._session.close()


def transport(config: Config) -> Transport:
    return V2Transport(config) if config.api == "v2" else V1Transport(config)


# -- the sink --------------------------------------------------------------------


class InfluxSink:
    """Encodes each interval as line protocol and hands it to a :class:`SpoolSender` (the
    spool and the one sender thread); see the module doc."""

    def __init__(self, config: Config, send: Transport) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir, config.spool_max_bytes, name=config.name)
        self._transport = send
        self.sender = SpoolSender(self.spool, send.send, config.batch_size, config.flush_interval,
                                  Backoff(config.retry_initial, config.retry_max))
        self._health_stop = threading.Event()
        self._health_thread = threading.Thread(target=self._health_loop, name="influx-health", daemon=True)
        self._health_thread.start()

    def write(self, scored: Scored) -> None:
        """Spool one interval's points; returns at once (no network)."""
        self.sender.append(scored_lines(scored))

    def flush(self, timeout: float) -> bool:
        """Send everything spooled now, waiting up to ``timeout`` seconds; True when the spool is empty."""
        return self.sender.flush(timeout)

    def close(self) -> None:
        """Send what is spooled for up to ``close_timeout`` seconds, then a last health point
        (so its counters tell how the run ended); the rest waits on disk for the next start."""
        deadline = time.monotonic() + self.config.close_timeout
        self._health_stop.set()
        self._health_thread.join()
        self.sender.flush(self.config.close_timeout)
        self.sender.append(health_lines(time.time()))
        left = self.sender.close(max(deadline - time.monotonic(), 0.0))
        if left:
            log.warning("database unreachable at close; points stay spooled for the next start",
                        points=left, spool=str(self.spool.dir))
        self._transport.close()

    def _health_loop(self) -> None:
        """A netmon_health point every ``health_interval`` s of wall time, whatever the pipeline does
        (a stalled pipeline or a database outage is when these points matter most)."""
        while not self._health_stop.wait(self.config.health_interval):
            self.sender.append(health_lines(time.time()))


def check(config: Config) -> list[str]:
    """What would keep this sink from writing (``netmon check-config``): credentials that
    cannot be read, a spool directory that cannot be written, a database that does not answer."""
    problems = []
    try:
        token = _secret(config.token, config.token_env, config.token_file)
        password = _secret(config.password, config.password_env, config.password_file)
    except CredentialError as exc:
        return [str(exc)]  # check-config names the sink itself
    if config.api == "v2" and not token:
        problems.append(f"no token: set token_file, token, or the environment variable {config.token_env}")
    if config.api == "v1" and config.username and not password:
        problems.append(f"user {config.username!r} without a password: set password_file, password, "
                        f"or the environment variable {config.password_env}")
    problems += creatable(config.spool_dir, "spool_dir", directory=True)
    try:
        requests.get(config.url.rstrip("/") + "/ping", timeout=min(config.timeout, 5.0))
        if config.api == "v1":
            with _v1_session(config) as session:
                found = database_problem(config, session)
            if found is not None:
                problem, missing = found
                if not missing:
                    problems.append(problem)
                elif config.skip_database_creation:
                    problems.append(f"{problem} and skip_database_creation = true: create it")
                elif not _can_create(config):
                    problems.append(f"{problem}, and user {config.username!r} is not an admin, so netmon cannot "
                                    "create it: create it as an admin and GRANT WRITE to the user")
    except requests.RequestException as exc:
        problems.append(f"no answer from {redact_url(config.url)} ({type(exc).__name__}); points would wait in the spool")
    return problems


def _can_create(config: Config) -> bool:
    """Whether the v1 user may create databases (an admin, or no authentication)."""
    if not config.username:
        return True
    with _v1_session(config) as session:
        return _influxql(session, config, "SHOW USERS") is None


def build(config: Config, settings: Any = None) -> InfluxSink:
    """The sink for one ``[[sinks]] type = "influx"`` table. A v1 database that is missing
    is created first (DatabaseError when it cannot be: a replay must not leave every point
    stranded in the spool); a server that does not answer yet is the spool's job. A credential
    file that cannot be read is a CredentialError naming this sink."""
    try:
        if config.api == "v1":
            try:
                with _v1_session(config) as session:
                    ensure_database(config, session)
            except requests.RequestException as exc:
                log.warning("database not reachable at start; points wait in the spool",
                            url=redact_url(config.url), error=type(exc).__name__)
        send = transport(config)
    except CredentialError as exc:
        raise CredentialError(f"influx sink: {exc}") from None
    for name in naming.START_COUNTERS:
        health.count(name, 0)
    return InfluxSink(config, send)
