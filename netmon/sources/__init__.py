"""Sources: where UDP/123 traffic comes from (pcap, live capture, eBPF, NetFlow/IPFIX, sFlow).

Each module registers in ``netmon.registry.SOURCES`` and yields Frames,
Observations or Watermarks (see ``netmon.batch``).
"""
