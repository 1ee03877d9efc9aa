"""Where netmon keeps its files when the config does not say: one data directory, the same
whatever directory a command is run from (``netmon replay`` in one place and ``netmon hosts``
in another must find the same store).

In order: ``$NETMON_DATA_DIR``; ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``,
/var/lib/netmon in the shipped unit); ``/var/lib/netmon`` for root; else
``$XDG_DATA_HOME/netmon`` (``~/.local/share/netmon``). Relative paths written in a config
stay relative to the working directory (the unit's is /var/lib/netmon).
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The directory of netmon's default files (store, silences...), read from the environment now."""
    if explicit := os.environ.get("NETMON_DATA_DIR"):
        return Path(explicit)
    if systemd := os.environ.get("STATE_DIRECTORY", "").split(":")[0]:
        return Path(systemd)
    if os.geteuid() == 0:
        return Path("/var/lib/netmon")
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "netmon"


def data_path(*parts: str) -> str:
    """A default file or directory of netmon's in the data directory (``data_path("netmon.db")``);
    with :func:`functools.partial`, a config field's ``default_factory``."""
    return str(data_dir().joinpath(*parts))


def creatable(path: str | Path, what: str, directory: bool = False) -> list[str]:
    """Why netmon could not create (or write) the file, or the ``directory``, ``path``, for
    ``check-config``: an existing ``path`` must be of that kind and writable, else its nearest
    existing ancestor must be a writable directory (a file in the way is the usual slip). Empty
    when it can; nothing is created. An unreadable ancestor reads as absent (``os.path.exists``
    does not raise), so the answer is "not writable", never a traceback."""
    target = Path(path).absolute()
    if os.path.exists(target):
        if target.is_dir() != directory:
            return [f"{what} {path}: is {'a directory' if target.is_dir() else 'not a directory'}"]
        if not directory and not target.is_file():
            return [f"{what} {path}: is not a regular file (a device or a FIFO)"]
        return [] if os.access(target, os.W_OK | (os.X_OK if directory else 0)) else [f"{what} {path}: not writable"]
    existing = next(p for p in target.parents if os.path.exists(p))
    if not existing.is_dir():
        return [f"{what} {path}: cannot create it, {existing} is not a directory"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"{what} {path}: cannot create it, {existing} is not writable"]
    return []
