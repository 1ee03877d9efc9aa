"""A throw-away network lab for tests: namespaces, veth pairs, processes by PID.

Traffic safety: every address lives inside namespaces this lab creates, joined by
veth pairs bridged to nothing. Teardown stops only the processes the lab started
(by PID) and deletes only the namespaces it made.

    with Lab() as lab:
        border = lab.namespace("border")
        client = lab.namespace("client")
        lab.link(client, "10.99.0.2/24", border, "10.99.0.1/24")
        lab.spawn(client, ["chronyd", ...])
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

_ids = itertools.count()


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def can_make_namespaces() -> str | None:
    """None when this process may create namespaces, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


@dataclass
class Namespace:
    name: str

    def exec(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside the namespace and wait for it."""
        return run(["ip", "netns", "exec", self.name, *argv], check=check)


@dataclass
class Lab:
    """Namespaces and processes owned by one test; all removed on exit."""

    prefix: str = field(default_factory=lambda: f"nm{os.getpid() % 10000}x{next(_ids)}")
    namespaces: list[Namespace] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace(self, name: str) -> Namespace:
        ns = Namespace(f"{self.prefix}-{name}")
        run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.exec(["ip", "link", "set", "lo", "up"])
        return ns

    def link(self, a: Namespace, a_addr: str, b: Namespace, b_addr: str, name: str = "") -> tuple[str, str]:
        """A veth pair between two namespaces, addressed and up; returns (a_if, b_if)."""
        tag = name or str(next(_ids))
        a_if, b_if = f"{self.prefix[:6]}a{tag}"[:15], f"{self.prefix[:6]}b{tag}"[:15]
        run(["ip", "link", "add", a_if, "netns", a.name, "type", "veth", "peer", "name", b_if, "netns", b.name])
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            if addr:
                family = "-6" if ":" in addr else "-4"
                extra = ["nodad"] if ":" in addr else []
                ns.exec(["ip", family, "addr", "add", addr, "dev", ifname, *extra])
            ns.exec(["ip", "link", "set", ifname, "up"])
        return a_if, b_if

    def spawn(self, ns: Namespace | None, argv: list[str], **kwargs: object) -> subprocess.Popen:
        """Start a process (in a namespace, or on the host when ns is None); stopped at teardown."""
        full = ["ip", "netns", "exec", ns.name, *argv] if ns else argv
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(full, start_new_session=True, **kwargs)  # type: ignore[arg-type]
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        """Stop one process this lab started (its own process group), by PID."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)

    def close(self) -> None:
        for proc in reversed(self.processes):
            self.stop(proc)
        self.processes.clear()
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "del", ns.name], check=False)
        self.namespaces.clear()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def no_clock_caps(argv: list[str]) -> list[str]:
    """Wrap a daemon so it can never set the system clock (no CAP_SYS_TIME at all)."""
    return ["setpriv", "--inh-caps=-sys_time", "--bounding-set=-sys_time", *argv]


CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
