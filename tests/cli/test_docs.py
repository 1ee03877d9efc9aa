"""Docs users act on (issue 13 item 8): flow exporters need a short active timeout."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_item8_deploy_readme_tells_users_to_set_a_short_active_timeout_and_why():
    text = (ROOT / "deploy" / "README.md").read_text()
    section = text.split("## Flow exporters")[1].split("\n## ")[0]
    assert "softflowd -i IF -n COLLECTOR:2055 -v 9 -t maxlife=60" in section, "no softflowd command line"
    assert "nfprobe_timeouts: maxlife=60" in section, "no pmacct setting"
    assert re.search(r"active timeout", section) and "record_delay" in section
    assert "in the\ninterval in which the flow ended" in section or "flow ended" in section, "the why is missing"
    assert "-a" in section, "softflowd -r needs -a to keep the packets' own times"


def test_smaller_one_host_is_singular():
    from netmon.report.listing import plural

    assert (plural(1, "host"), plural(2, "host"), plural(0, "finding")) == ("1 host", "2 hosts", "0 findings")
