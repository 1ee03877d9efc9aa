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
