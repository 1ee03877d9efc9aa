"""What both live sources (AF_PACKET capture, eBPF) need from the host: privileges,
the interface, the network namespace. Each failure says what to install or grant.
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import os
import socket
import threading
from collections.abc import Generator, Iterator

CAP_NET_RAW = 13
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

CLONE_NEWNET = 0x40000000
ETHERNET_LIKE = (1, 772)  # ARPHRD_ETHER, ARPHRD_LOOPBACK: frames start with an Ethernet header
_libc = ctypes.CDLL(None, use_errno=True)


class LiveError(RuntimeError):
    """A live source cannot start here; the message says what to install or grant."""


def effective_caps() -> int:
    """The calling process's effective capability set, as a bit mask."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_caps(what: str, needed: dict[str, int], alternatives: tuple[int, ...] = ()) -> None:
    """LiveError unless every capability in ``needed`` (name -> bit) is effective.

    A capability in ``needed`` also counts as held when CAP_SYS_ADMIN is, for those
    in ``alternatives`` (CAP_BPF and CAP_PERFMON split off CAP_SYS_ADMIN in Linux 5.8).
    """
    caps = effective_caps()
    has_admin = bool(caps >> CAP_SYS_ADMIN & 1)
    missing = [
        name for name, bit in needed.items() if not (caps >> bit & 1) and not (bit in alternatives and has_admin)
    ]
    if missing:
        names = " ".join(missing)
        raise LiveError(
            f"{what} needs {names}: run netmon as root, or grant them, e.g. in the systemd unit "
            f"AmbientCapabilities={names} CapabilityBoundingSet={names}"
        )


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the body in network namespace ``name`` (``ip netns``), this thread only.

    Sockets made inside stay in that namespace after the body returns, which is how
    a collector reads an interface of a router's VRF namespace.
    """
    if not name:
        yield
        return
    path = f"/run/netns/{name}"
    try:
        target = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise LiveError(f"network namespace {name!r} not found ({path}); list them with: ip netns list") from None
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LiveError(f"cannot enter network namespace {name!r}: {os.strerror(err)} (needs CAP_SYS_ADMIN)")
        try:
            yield
        finally:
            _libc.setns(home, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


def interface_index(name: str) -> int:
    """The ifindex of ``name`` in the current namespace; LiveError lists the ones there are."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        present = ", ".join(n for _, n in socket.if_nameindex())
        raise LiveError(f"interface {name!r} not found; interfaces here: {present} (see: ip link)") from None


def end(stop: threading.Event, generator: Generator | None) -> bool:
    """Set ``stop`` and close ``generator`` (a source's ``batches``) unless it is running.

    True when the caller may free the source's kernel resources now; False when the
    generator is running in another thread (or under a signal handler), which then
    sees ``stop``, yields what is left and frees them itself.
    """
    stop.set()
    if generator is not None and inspect.getgeneratorstate(generator) == inspect.GEN_RUNNING:
        return False
    if generator is not None:
        generator.close()
    return True


def require_ethernet(interface: str, hatype: int) -> None:
    """LiveError unless frames on ``interface`` (ARPHRD ``hatype``) start with an Ethernet header."""
    if hatype not in ETHERNET_LIKE:
        raise LiveError(
            f"interface {interface!r} is not Ethernet (ARPHRD {hatype}: tun, WireGuard, PPP...): the live sources "
            "read Ethernet frames; watch the Ethernet interface the tunnel rides on, or a mirror port"
        )
