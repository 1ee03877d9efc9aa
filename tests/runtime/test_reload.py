"""Issue 11 runtime, item 4: a SIGHUP reload checks and builds the new stages first; on any failure
(a bad config, a missing interface, a busy port) the running ones go on, nothing partly built is
left open, and a new source's own lateness holds windows open from its first item."""

from __future__ import annotations

import socket
import signal
import subprocess
import sys
from pathlib import Path

from netmon import health
from netmon.commands.run import Service
from netmon.config import load
from tests.support.lab import wait_for

NETMON = str(Path(sys.executable).with_name("netmon"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def write(path: Path, tmp: Path, sources: str, interval: int = 60) -> None:
    path.write_text(f"""
[campus]
internal = ["10.0.0.0/8"]
[aggregate]
interval = {interval}
[detect]
detectors = ["rules"]
checkpoint = "{tmp / 'state.ckpt'}"
[[sinks]]
type = "store"
path = "{tmp / 'netmon.db'}"
{sources}
""")


def netflow(port: int, record_delay: float = 60) -> str:
    return f'[[sources]]\ntype = "netflow"\nlisten = ["127.0.0.1:{port}"]\nrecord_delay = {record_delay}\n'


def test_reload_failures_keep_the_running_sources_and_leak_nothing(tmp_path):
    health.reset()
    config = tmp_path / "netmon.toml"
    running_port, new_port = free_port(), free_port()
    write(config, tmp_path, netflow(running_port))
    service = Service(str(config), load(config))
    try:
        running = list(service.stages.sources)
        cases = {
            "bad config": netflow(running_port) + '[[sources]]\ntype = "netflow"\nlisten = ["nonsense"]\n',
            "missing interface": netflow(running_port) + '[[sources]]\ntype = "capture"\ninterface = "nosuch0"\n',
            "busy port, found when building": netflow(running_port) + netflow(new_port) + netflow(new_port),
        }
        for failed, (case, sources) in enumerate(cases.items(), start=1):
            write(config, tmp_path, sources)
            assert service.apply(str(config)) is False, f"{case}: the reload should have failed"
            assert service.stages.sources == running, f"{case}: the running sources were replaced"
            assert not port_is_free(running_port), f"{case}: the running listener was closed"
            assert port_is_free(new_port), f"{case}: a partly built source still holds its port"
            assert health.snapshot()["pipeline.reload.failed"] == failed
    finally:
        service.runner.shutdown()
    assert port_is_free(running_port)


def test_reload_adds_a_source_with_its_own_lateness_and_keeps_the_unchanged_one(tmp_path):
    config = tmp_path / "netmon.toml"
    first, second = free_port(), free_port()
    write(config, tmp_path, netflow(first))
    service = Service(str(config), load(config))
    try:
        kept = service.stages.sources[0]
        write(config, tmp_path, netflow(first) + netflow(second, record_delay=300))
        assert service.apply(str(config)) is True
        added = [slot for slot in service.stages.sources if slot is not kept]
        assert kept in service.stages.sources, "an unchanged source must run on untouched"
        assert len(added) == 1 and added[0].lateness == 300
        assert service.runner.clock.marks[added[0].tag].lateness == 300, "windows must wait for the new source"
        assert not port_is_free(second)
        write(config, tmp_path, netflow(first))
        assert service.apply(str(config)) is True
        assert service.stages.sources == [kept] and port_is_free(second), "a removed source must be closed"
    finally:
        service.runner.shutdown()


def test_sighup_with_a_bad_config_keeps_netmon_run_running(tmp_path):
    config = tmp_path / "netmon.toml"
    port = free_port()
    write(config, tmp_path, netflow(port))
    log_path = tmp_path / "netmon.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([NETMON, "run", "--config", str(config)], stdout=log, stderr=log, start_new_session=True)
    try:
        assert wait_for(lambda: proc.poll() is not None or "netmon running" in log_path.read_text(), 60), \
            log_path.read_text()
        write(config, tmp_path, netflow(port) + '[[sources]]\ntype = "capture"\ninterface = "nosuch0"\n')
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload failed" in log_path.read_text(), 30), log_path.read_text()
        assert "source capture (capture)" in log_path.read_text(), "the log must name the source that cannot start"
        assert proc.poll() is None, f"netmon run ended on a bad reload:\n{log_path.read_text()}"
        assert not port_is_free(port), "the running netflow listener was closed"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log_path.read_text()
