"""Issue 14 item 1: a replay's start-up imports only what a replay of packets uses.

Python spends a replay's first half second importing; the config's plug-in unions used to
import every source and sink (the flow listeners, the InfluxDB client's sink, alert hooks,
Prometheus), and river with scipy costs most of a second more. Those come in when a config
names them or a model is made, never for a replay of plain packets into the embedded store.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.decode import builders

#: Packages a replay of packets into the embedded store has no use for.
UNUSED_PACKAGES = {"river", "scipy", "influxdb_client", "pyroute2", "scapy", "requests", "urllib3",
                   "prometheus_client", "nats", "dpkt"}
#: Modules of other jobs (live capture, flow listeners, networked sinks, the cluster, mitigation),
#: the progress bar, which a replay draws only on a terminal, and rich's emoji table (the summary is
#: printed as written: a ":name:" in a finding stays text).
UNUSED_MODULES = ("rich.progress", "rich._emoji_codes", "netmon.sources.capture", "netmon.sources.ebpf", "netmon.sources.sflow",
                  "netmon.sources.netflow.source", "netmon.sources.netflow.collector", "netmon.sources.netflow.listener",
                  "netmon.sinks.influx", "netmon.sinks.spool", "netmon.sinks.alerts", "netmon.sinks.metrics",
                  "netmon.sinks.evidence", "netmon.transport", "netmon.cluster", "netmon.act", "netmon.simulate")


def test_a_replay_of_packets_imports_no_listener_networked_sink_or_model_library(tmp_path: Path) -> None:
    capture = tmp_path / "edge.pcap"
    capture.write_bytes(builders.pcap_bytes([builders.link_header(1, p) + p for p in builders.ip_packets(builders.rows(4))]))
    args = ["replay", str(capture), "--internal", "10.0.0.0/8", "--db", str(tmp_path / "n.db")]
    probe = (f"import sys\nfrom netmon.cli import main\ntry:\n    main({args!r})\nexcept SystemExit as end:\n"
             "    assert not end.code, end.code\nprint(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    modules = done.stdout.splitlines()[-1].split()
    assert "netmon.sources.pcap" in modules and "netmon.sinks.store" in modules, "the probe did not replay"
    packages = sorted(UNUSED_PACKAGES & {m.split(".")[0] for m in modules})
    assert not packages, f"a replay of packets imported {packages}"
    ours = sorted(m for m in modules if m.startswith(UNUSED_MODULES))
    assert not ours, f"a replay of packets (no terminal) imported other jobs' modules: {ours}"
