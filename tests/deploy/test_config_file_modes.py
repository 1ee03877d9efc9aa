"""Issue 11 item 8: the deploy docs installed netmon.toml 0644, yet it holds credentials (a chat
webhook's URL is its key). The documented install must leave the config and every credential
file unreadable to other users, and the unit must still reach the config through its group."""

from __future__ import annotations

import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: ``install [-d] -m MODE [-o OWNER] [-g GROUP] SOURCE... /etc/netmon/NAME``
INSTALL = re.compile(r"^\s*install\s+(?P<args>.*?)\s+(?P<target>/etc/netmon\S*)")


def installed() -> dict[str, dict[str, str]]:
    """Each /etc/netmon path the systemd section installs, with its mode and group."""
    found = {}
    for line in (DEPLOY / "README.md").read_text().splitlines():
        if match := INSTALL.match(line):
            args = match.group("args")
            mode = re.search(r"-m\s+(\d+)", args)
            group = re.search(r"-g\s+(\S+)", args)
            found[match.group("target")] = {"mode": mode.group(1) if mode else "", "group": group.group(1) if group else ""}
    return found


def test_deploy_docs_install_the_config_and_credentials_unreadable_to_other_users():
    paths = installed()
    assert {"/etc/netmon", "/etc/netmon/netmon.toml", "/etc/netmon/influx-token"} <= set(paths), paths
    for path, how in paths.items():
        assert how["mode"], f"{path} is installed without an explicit mode (install's default is 0755)"
        assert int(how["mode"], 8) & 0o007 == 0, f"{path} is installed {how['mode']}: other users could read it"
    assert paths["/etc/netmon/netmon.toml"]["group"] == "netmon", "the config must be readable by the netmon group"
    unit = (DEPLOY / "systemd" / "netmon.service").read_text()
    assert re.search(r"^SupplementaryGroups=netmon$", unit, re.M), "the unit cannot read a 0640 root:netmon config"
