"""A small read-only HTTP server for evidence reports, at the URL alerts carry.

    GET /                               redirected to {url_path}
    GET {url_path}                      an index of the hosts with a report
    GET {url_path}<host>/report.html    the host's report (report.md, rate.png,
                                        excerpt.pcap, report.pdf likewise)

``<host>`` is the host's file-safe name (:func:`~netmon.sinks.alerts.model.host_slug`),
as in ``evidence_url``. With a store, a report that is missing or older than
``max_age`` seconds is written from the store before it is served, so an alert's
link works the moment the alert is sent; packets the live collector kept for the
host (``packets.pcap``, see :mod:`netmon.sinks.evidence`) become its excerpt.

Only GET and HEAD; only the file names above, inside one host directory directly
under the evidence directory (resolved, symlinks included): nothing else on the
disk can be reached. Standard library only (http.server), one thread a request.
"""

from __future__ import annotations

import html
import ipaddress
import re
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import structlog

from netmon import health
from netmon.sinks.alerts.model import host_slug
from netmon.sinks.evidence import PACKETS_FILE

log = structlog.get_logger(__name__)

#: file name -> content type; nothing else is ever served.
FILES = {
    "report.html": "text/html; charset=utf-8",
    "report.md": "text/markdown; charset=utf-8",
    "rate.png": "image/png",
    "excerpt.pcap": "application/vnd.tcpdump.pcap",
    "report.pdf": "application/pdf",
}
#: Files written from the store when stale (the PDF only by ``netmon evidence --pdf``).
GENERATED = ("report.html", "report.md", "rate.png", "excerpt.pcap")
SLUG = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,80}$")
#: The report needs nothing from anywhere: no script, no remote resource.
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def host_of(slug: str) -> str | None:
    """The host a file-safe name stands for (``2001-db8--_64`` -> ``2001:db8::/64``), None if none."""
    if not SLUG.match(slug):
        return None
    text = slug if "." in slug else slug.replace("-", ":").replace("_", "/")
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return text if host_slug(text) == slug else None


@dataclass
class Site:
    """What the server publishes: the evidence directory, and the store reports are written from."""

    directory: Path
    store: Path | None = None
    url_path: str = "/evidence/"
    max_age: float = 60.0

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()
        self.url_path = "/" + self.url_path.strip("/") + "/" if self.url_path.strip("/") else "/"
        self.lock = threading.Lock()

    def path_for(self, url: str) -> Path | None:
        """The file a URL path names, or None when it names nothing that may be served."""
        path = unquote(urlsplit(url).path)
        if not path.startswith(self.url_path):
            return None
        parts = path[len(self.url_path):].split("/")
        if len(parts) != 2 or parts[1] not in FILES or host_of(parts[0]) is None:
            return None
        target = (self.directory / parts[0] / parts[1]).resolve()
        if target.parent.parent != self.directory:
            return None  # a symlink out of the evidence directory
        return target

    def refresh(self, target: Path) -> None:
        """Write the host's report from the store when it is missing or older than ``max_age``."""
        if self.store is None or target.name not in GENERATED:
            return
        page = target.parent / "report.html"
        if page.exists() and time.time() - page.stat().st_mtime < self.max_age:
            return
        from netmon.report.evidence import write_report
        from netmon.sinks.store import StoreError

        host = host_of(target.parent.name)
        packets = target.parent / PACKETS_FILE
        with self.lock:
            try:
                write_report(self.store, str(host), target.parent, packets=packets if packets.exists() else None)
            except LookupError:
                return  # not in the store: 404 below unless a report was written before
            except (StoreError, OSError) as exc:
                log.error("cannot write the evidence report", host=host, error=str(exc))
                health.count("evidence.report_errors")

    def index(self) -> bytes:
        hosts = sorted(p.parent.name for p in self.directory.glob("*/report.html") if host_of(p.parent.name))
        items = "".join(f'<li><a href="{html.escape(h)}/report.html">{html.escape(str(host_of(h)))}</a></li>' for h in hosts)
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>netmon evidence</title></head>'
                f"<body><h1>netmon evidence reports</h1><ul>{items or '<li>none yet</li>'}</ul></body></html>").encode()


class Handler(BaseHTTPRequestHandler):
    server_version = "netmon"
    sys_version = ""
    site: Site

    def do_GET(self) -> None:
        self.answer(body=True)

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def refuse(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "read-only: GET and HEAD only")

    do_POST = do_PUT = do_DELETE = do_PATCH = refuse

    def answer(self, body: bool) -> None:
        health.count("evidence.requests")
        site = self.site
        path = urlsplit(self.path).path
        if path.rstrip("/") + "/" == site.url_path:
            self.send(site.index(), "text/html; charset=utf-8", body)
            return
        if path == "/":  # the server's address typed alone: where the reports are
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", site.url_path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        target = site.path_for(self.path)
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND, "no such report")
            return
        site.refresh(target)
        try:
            data = target.read_bytes()
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "no report for this host")
            return
        self.send(data, FILES[target.name], body, attachment=target.suffix in (".pcap", ".pdf"))

    def send(self, data: bytes, kind: str, body: bool, attachment: bool = False) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", POLICY)
        if attachment:
            self.send_header("Content-Disposition", "attachment")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.info("evidence request", client=self.client_address[0], request=format % args)


class EvidenceServer:
    """The server in a thread of its own: ``start()``, ``url``, ``stop()``."""

    def __init__(self, site: Site, address: str = "127.0.0.1", port: int = 8123) -> None:
        handler = type("SiteHandler", (Handler,), {"site": site})
        server = ThreadingHTTPServer
        if ":" in address:
            server = type("Server6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        self.site = site
        self.httpd = server((address, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="evidence-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}{self.site.url_path}"

    def start(self) -> "EvidenceServer":
        self.thread.start()
        log.info("serving evidence reports", url=self.url, directory=str(self.site.directory))
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
