"""The AF_PACKET source against tcpdump on the same interface."""

from __future__ import annotations

import numpy as np
import pytest

from netmon.sources.capture import CaptureSource, Config
from netmon.sources.live import LiveError
from tests.live.conftest import field_multiset, source_rows

pytestmark = pytest.mark.root


def test_capture_keeps_the_same_frames_as_tcpdump(watched):
    expected = watched.expected
    captured, counted = source_rows(watched.capture_items)
    assert len(counted) == 0
    assert len(expected) > 300, f"too little traffic in tcpdump's capture: {len(expected)} NTP packets"
    assert len(captured) == len(expected), f"capture kept {len(captured)} NTP packets, tcpdump {len(expected)}"
    assert np.array_equal(field_multiset(captured), field_multiset(expected)), \
        "captured frames decode to different NTP fields than tcpdump's"
    gap = np.abs(np.sort(captured["time"]) - np.sort(expected["time"])).max()
    assert gap < 2e-6, f"capture times differ from tcpdump's (microsecond pcap) by up to {gap:.6f} s"


def test_kernel_drop_counters_are_reported(watched):
    assert watched.health["source.capture.kernel_drops"] == 0
    assert watched.health["source.capture.kernel_packets"] >= len(watched.expected)
    assert watched.health["source.capture.packets"] == watched.health["source.capture.kernel_packets"]


def test_missing_interface_is_a_clear_error(lab):
    ns = lab.namespace("empty")
    with pytest.raises(LiveError, match="interface 'nosuch0' not found; interfaces here: lo"):
        CaptureSource(Config(type="capture", interface="nosuch0", netns=ns.name)).batches()


def test_missing_namespace_is_a_clear_error(lab):  # lab: skips unless root, like the source itself
    with pytest.raises(LiveError, match="network namespace 'netmon-no-such-ns' not found"):
        CaptureSource(Config(type="capture", interface="lo", netns="netmon-no-such-ns")).batches()
