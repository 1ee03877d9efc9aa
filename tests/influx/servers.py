"""Real time-series servers for tests: Debian's influxd (1.x) and victoria-metrics.

Each runs as a subprocess on a free loopback port with its data in a temporary
directory, is stopped by its PID, and can be stopped and started again on the same
port and data (the outage tests).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url}: server not ready after {timeout}s:\n{log.read_text()[-2000:]}")


@dataclass
class Server:
    """A server process we started: argv, port, data dir; start/stop by PID."""

    argv: list[str]
    port: int
    root: Path
    ready_path: str
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.root / "server.log"
        self.process = subprocess.Popen(self.argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                        start_new_session=True)
        _wait_http(self.url + self.ready_path, self.process, log)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Influx1(Server):
    """influxd 1.x with a minimal config: loopback only, reporting off, dirs in ``root``."""

    @classmethod
    def create(cls, root: Path, auth: bool = False) -> Influx1:
        port, rpc = free_port(), free_port()
        conf = root / "influxdb.conf"
        conf.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
            f'[meta]\n  dir = "{root}/meta"\n'
            f'[data]\n  dir = "{root}/data"\n  wal-dir = "{root}/wal"\n  query-log-enabled = false\n'
            f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
            f'  auth-enabled = {"true" if auth else "false"}\n'
            f'[monitor]\n  store-enabled = false\n'
            f'[continuous_queries]\n  enabled = false\n'
        )
        return cls(argv=[shutil.which("influxd") or "influxd", "-config", str(conf)], port=port, root=root,
                   ready_path="/ping")

    auth: tuple[str, str] | None = None  # (user, password) for a server created with auth=True

    def query(self, q: str, db: str = "netmon", epoch: str = "ms") -> dict:
        response = requests.get(self.url + "/query", params={"q": q, "db": db, "epoch": epoch}, auth=self.auth,
                                timeout=30)
        response.raise_for_status()
        return response.json()

    def create_database(self, db: str = "netmon") -> None:
        self.admin(f'CREATE DATABASE "{db}"')

    def admin(self, statement: str) -> None:
        """One InfluxQL management statement (CREATE DATABASE, CREATE USER, ...)."""
        response = requests.post(self.url + "/query", params={"q": statement}, auth=self.auth, timeout=10)
        response.raise_for_status()
        result = response.json()["results"][0]
        if "error" in result:
            raise AssertionError(f"{statement}: {result['error']}")

    def series(self, q: str, db: str = "netmon") -> list[dict]:
        """The series an InfluxQL statement returns (raises on a query error)."""
        result = self.query(q, db)["results"][0]
        if "error" in result:
            raise AssertionError(f"query failed: {q}\n{result['error']}")
        return result.get("series", [])


class Victoria(Server):
    """victoria-metrics single node, samples kept 100 years.

    ``dedup`` keeps one sample per series and millisecond, as InfluxDB keeps one point
    per series and timestamp (a resend overwrites): without it a batch resent after a
    lost acknowledgement would show twice here and never in InfluxDB.
    """

    @classmethod
    def create(cls, root: Path, dedup: bool = True) -> Victoria:
        port = free_port()
        argv = [shutil.which("victoria-metrics") or "victoria-metrics", f"-storageDataPath={root}/data",
                f"-httpListenAddr=127.0.0.1:{port}", "-retentionPeriod=100y", "-search.disableCache",
                "-search.latencyOffset=0s", "-loggerLevel=ERROR"]
        if dedup:
            argv.append("-dedup.minScrapeInterval=1ms")
        return cls(argv=argv, port=port, root=root, ready_path="/health")

    def export(self, match: str = '{__name__=~"ntp_.*|netmon_.*"}') -> dict[tuple, list[tuple[int, float]]]:
        """Every sample: (metric name, sorted labels) -> [(ms, value)], samples in time order."""
        requests.get(self.url + "/internal/force_flush", timeout=10)
        window = {"match[]": match, "start": "0", "end": str(int(time.time()) + 86400)}  # end defaults to "now"
        response = requests.post(self.url + "/api/v1/export", data=window, timeout=30)
        response.raise_for_status()
        out: dict[tuple, list[tuple[int, float]]] = {}
        for line in response.text.splitlines():
            item = json.loads(line)
            labels = dict(item["metric"])
            name = labels.pop("__name__")
            key = (name, tuple(sorted(labels.items())))
            out.setdefault(key, []).extend(zip(item["timestamps"], item["values"]))
        for samples in out.values():
            samples.sort()
        return out
