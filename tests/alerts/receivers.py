"""Real local receivers for alert hooks: HTTP, syslog (UDP and TCP), on loopback only."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from netmon.batch import Finding, HostIntervals, Scored


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """An HTTP server that records every POST; ``status`` and ``delay`` play a sick hook."""

    port: int = field(default_factory=free_port)
    status: int = 200
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.status < 300:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                try:
                    self.send_response(receiver.status)
                    self.end_headers()
                    self.wfile.write(b"{}")
                except BrokenPipeError:
                    pass  # the client timed out first: what a hanging hook looks like

            def log_message(self, *args) -> None:
                pass

        self.server: ThreadingHTTPServer | None = None
        self.handler = Handler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "HttpReceiver":
        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class SyslogReceiver:
    """Collects raw syslog messages on UDP and TCP (TCP split by RFC 6587 octet counting)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.udp: list[bytes] = []
        self.tcp: list[bytes] = []
        self.tcp_raw = b""
        self.udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp_sock.bind(("127.0.0.1", self.port))
        receiver = self

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = b""
                while chunk := self.request.recv(65536):
                    data += chunk
                receiver.tcp_raw += data
                while data:
                    length, _, rest = data.partition(b" ")
                    receiver.tcp.append(rest[: int(length)])
                    data = rest[int(length):]

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.tcp_server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
        threading.Thread(target=self.tcp_server.serve_forever, daemon=True).start()
        threading.Thread(target=self._udp, daemon=True).start()

    def _udp(self) -> None:
        while True:
            try:
                data, _ = self.udp_sock.recvfrom(65536)
            except OSError:
                return
            self.udp.append(data)

    def stop(self) -> None:
        self.tcp_server.shutdown()
        self.tcp_server.server_close()
        self.udp_sock.close()


def finding(host: str = "10.1.2.3", rule: str = "rule.kod_ignored", severity: str = "critical", score: float = 5.0,
            start: float = 1_700_000_000.0, explanation: str = "212 KoD RATE replies received and ignored",
            server: str = "192.0.2.10", group: str = "labs") -> Finding:
    return Finding(
        host=host, group=group, start=start, end=start + 60, detector=rule, severity=severity, score=score,
        explanation=explanation, evidence={"after_kod": {"value": 212.0, "baseline": 0.0}}, server=server,
    )


def scored(findings: list[Finding], start: float = 1_700_000_000.0, length: float = 60.0) -> Scored:
    hosts = np.array(sorted({f.host for f in findings}) or ["10.9.9.9"])
    intervals = HostIntervals(
        start=start, end=start + length, host=hosts, group=np.array(["labs"] * len(hosts)),
        role=np.array(["client"] * len(hosts)), features={},
    )
    return Scored(intervals=intervals, scores={}, findings=findings)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
