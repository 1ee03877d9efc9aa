"""A throw-away nats-server with JetStream on loopback, for the cluster tests.

Started on free loopback ports with its store in a directory of the test; ready
when its monitoring port answers ``/healthz?js-enabled-only=true``; stopped by its
PID. :meth:`NatsServer.restart` stops it and starts it again on the same ports and
store (a server restart mid-run).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.lab import wait_for

BINARY = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.monitor = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = store / "nats-server.log"

    def start(self) -> NatsServer:
        self.store.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([BINARY, "-js", "-sd", str(self.store), "-a", "127.0.0.1",
                                          "-p", str(self.port), "-m", str(self.monitor)],
                                         stdout=out, stderr=subprocess.STDOUT)
        if not wait_for(self.healthy, timeout=30):
            self.stop()
            raise RuntimeError(f"nats-server did not become healthy; see {self.log}")
        return self

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/healthz?js-enabled-only=true",
                                        timeout=1) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
