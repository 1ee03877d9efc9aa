"""The eBPF source against tcpdump on the same interface, with real NTP daemons and a crafted flood."""

from __future__ import annotations

import numpy as np
import pytest

from netmon import health
from netmon.batch import addr_text
from netmon.sources.ebpf import Config, EbpfSource, loader
from tests.live.conftest import (HOST1, HOST2, HOST2_6, INTERNAL, Collector, field_multiset, pcap_rows, per_host,
                                 run_ntp_traffic, source_rows)

pytestmark = pytest.mark.root
HOSTS = [HOST1, HOST2, "fd77:1::2", HOST2_6]


def kernel_per_host(att: loader.Attachment) -> dict[tuple[str, str], tuple[float, float]]:
    keys, vals = att.read_counters()
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for key, val in zip(keys, vals):
        where = (addr_text(key["host_hi"], key["host_lo"]), "out" if key["dir"] == loader.DIR_OUT else "in")
        packets, nbytes = out.get(where, (0.0, 0.0))
        out[where] = (packets + float(val["packets"]), nbytes + float(val["bytes"]))
    return out


def source(edge, rate: float, burst: float) -> EbpfSource:
    config = Config(type="ebpf", interface=edge.bout, netns=edge.border.name, sample_rate=rate,
                    sample_burst=burst, read_interval=0.5)
    return EbpfSource(config, INTERNAL)


def test_kernel_counters_and_samples_equal_tcpdump_packet_for_packet(edge):
    pcap = edge.tmp / "bout.pcap"
    dump = edge.tcpdump(pcap)
    collector = Collector(source(edge, rate=1e6, burst=1e6))
    run_ntp_traffic(edge)
    edge.stop_tcpdump(dump)
    att = collector.source._attachment
    kernel = kernel_per_host(att)
    items = collector.finish()

    expected = pcap_rows(pcap)
    want = per_host(expected, HOSTS)
    assert all(want[(h, "out")][0] > 0 for h in HOSTS[:3]), f"traffic missing from tcpdump's capture: {want}"
    assert want[(HOST2, "in")][0] >= 50, "KoD replies (plain, VLAN and QinQ) missing from tcpdump's capture"
    got = {k: kernel.get(k, (0.0, 0.0)) for k in want}
    assert got == want, f"kernel counters (packets, bytes) differ from tcpdump's:\nkernel {got}\ntcpdump {want}"

    sampled, counted = source_rows(items)
    assert len(counted) == 0, f"{counted['packets'].sum()} packets not sampled although under the cap"
    assert len(sampled) == len(expected), f"{len(sampled)} samples for {len(expected)} packets in tcpdump's capture"
    assert np.array_equal(field_multiset(sampled), field_multiset(expected)), \
        "sampled headers decode to different NTP fields than tcpdump's capture"
    assert (sampled["vlan"] == 100).sum() == (expected["vlan"] == 100).sum() > 0, "VLAN ids lost in the samples"


def test_flood_past_the_sampling_cap_still_counts_every_packet_once(edge):
    pcap = edge.tmp / "bout.pcap"
    dump = edge.tcpdump(pcap)
    collector = Collector(source(edge, rate=20, burst=10))
    run_ntp_traffic(edge, flood=600)
    edge.stop_tcpdump(dump)
    items = collector.finish()

    expected = pcap_rows(pcap)
    sampled, counted = source_rows(items)
    assert len(sampled) < len(expected) / 4, f"the cap let {len(sampled)} of {len(expected)} headers through"
    assert health.snapshot().get("source.ebpf.sample_capped", 0) > 0, "capped samples not reported in health"
    both = np.concatenate([sampled, counted])
    got, want = per_host(both, HOSTS), per_host(expected, HOSTS)
    assert got == want, f"samples + counts (packets, bytes) differ from tcpdump's:\nsource {got}\ntcpdump {want}"
