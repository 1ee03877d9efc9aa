"""The eBPF source against tcpdump on the same interface, with real NTP daemons and a crafted flood."""

from __future__ import annotations

import numpy as np
import pytest

from netmon import health
from netmon.aggregate import Aggregator
from netmon.config import Aggregate, Campus
from netmon.sources.ebpf import Config, EbpfSource
from tests.live.conftest import (HOST1, HOST2, HOST2_6, INTERNAL, Collector, field_multiset, pcap_rows, per_host,
                                 run_ntp_traffic, source_rows)

pytestmark = pytest.mark.root
HOSTS = [HOST1, HOST2, "fd77:1::2", HOST2_6]
VOLUME = ("requests_out", "replies_in", "requests_in", "replies_out", "bytes_out", "bytes_in")
NTP = ("servers", "client_ports", "kod_rate", "kod_deny", "kod_rstr", "mode3_out", "mode4_in", "version3_out",
       "version4_out", "org_zero", "poll")


def host_features(rows: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Helper B's aggregator over ``rows`` in one long interval: host -> feature -> value."""
    aggregator = Aggregator(Campus(internal=INTERNAL), Aggregate(interval=1e9))
    out: dict[str, dict[str, float]] = {}
    for intervals in aggregator.add(np.sort(rows, order="time")) + aggregator.flush():
        for i, host in enumerate(intervals.host):
            for name in names:
                value = float(intervals.features[name][i])
                out.setdefault(str(host), {})[name] = out.get(str(host), {}).get(name, 0.0) + value
    return out


def test_kernel_counters_equal_tcpdump_per_host_packet_and_byte(watched):
    want = per_host(watched.expected, HOSTS)
    assert all(want[(h, "out")][0] > 0 for h in HOSTS[:3]), f"traffic missing from tcpdump's capture: {want}"
    assert want[(HOST2, "in")][0] >= 50, "KoD replies (plain, VLAN and QinQ) missing from tcpdump's capture"
    classic = (watched.expected["sport"] == 123) & (watched.expected["dport"] == 123)
    assert classic.any(), "no ntpd (port 123 to port 123) packets in tcpdump's capture"
    got = {k: watched.kernel.get(k, (0.0, 0.0)) for k in want}
    assert got == want, f"kernel counters (packets, bytes) differ from tcpdump's:\nkernel {got}\ntcpdump {want}"


def test_sampled_headers_decode_to_the_fields_of_tcpdumps_capture(watched):
    sampled, counted = source_rows(watched.ebpf_items)
    expected = watched.expected
    assert len(counted) == 0, f"{counted['packets'].sum()} packets not sampled although under the cap"
    assert len(sampled) == len(expected), f"{len(sampled)} samples for {len(expected)} packets in tcpdump's capture"
    assert np.array_equal(field_multiset(sampled), field_multiset(expected)), \
        "sampled headers decode to different NTP fields than tcpdump's capture"
    for vlan in (100, 300):
        assert (sampled["vlan"] == vlan).sum() == (expected["vlan"] == vlan).sum() > 0, f"VLAN {vlan} lost"


def test_ebpf_rows_give_the_same_host_features_as_the_pcap_path(watched):
    sampled, counted = source_rows(watched.ebpf_items)
    got = host_features(np.concatenate([sampled, counted]), VOLUME + NTP)
    want = host_features(watched.expected, VOLUME + NTP)
    assert got == want, f"aggregated features differ:\neBPF {got}\npcap {want}"


def test_flood_past_the_sampling_cap_still_counts_every_packet_once(edge):
    pcap = edge.tmp / "bout.pcap"
    dump = edge.tcpdump(pcap)
    config = Config(type="ebpf", interface=edge.bout, netns=edge.border.name, sample_rate=20, sample_burst=10,
                    read_interval=0.5)
    collector = Collector(EbpfSource(config, INTERNAL))
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
    got, want = host_features(both, VOLUME), host_features(expected, VOLUME)
    assert got == want, f"request/reply volumes differ after aggregation:\neBPF {got}\npcap {want}"
