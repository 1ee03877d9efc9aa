"""Every flow record in a pcap of export traffic, as plain dicts (``netmon decode --flows``).

All records, not only UDP/123, so any one can be compared with a peer decoder's
output. NetFlow/IPFIX and sFlow are told apart by content (sFlow's first 32-bit
word is 5; NetFlow's first 16 bits are its version), not by port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from netmon.batch import addr_text
from netmon.sources.netflow.collector import Collector
from netmon.sources.netflow.datagrams import udp_datagrams
from netmon.sources.pcapfile import read_frames
from netmon.sources.sflow import SflowDecoder

SFLOW_MAGIC = b"\x00\x00\x00\x05"


def flow_rows(path: str | Path, sampling: dict[str, int] | None = None) -> Iterator[np.ndarray]:
    """FLOW_DTYPE rows of a pcap, one array per chunk of frames (sFlow raw headers included)."""
    netflow = Collector(sampling)
    sflow = SflowDecoder(sampling)
    for frames in read_frames(Path(path)):
        for datagram in udp_datagrams(frames):
            if datagram.payload[:4] == SFLOW_MAGIC:
                sflow.feed(datagram.payload, datagram.time)
            else:
                netflow.feed(datagram.payload, datagram.source)
        flows, sampled = netflow.flush(), sflow.flush()
        yield np.concatenate([flows.flows, flows.header_flows, sampled.flows, sampled.header_flows])


def as_dicts(rows: np.ndarray) -> Iterator[dict[str, Any]]:
    """JSON-ready records: time (flow end, UNIX s), start, exporter, endpoints, counts as exported."""
    for r in rows:
        yield {
            "time": float(r["end"]),
            "start": float(r["start"]),
            "exporter": addr_text(r["exporter_hi"], r["exporter_lo"]),
            "src": addr_text(r["src_hi"], r["src_lo"]),
            "dst": addr_text(r["dst_hi"], r["dst_lo"]),
            "sport": int(r["sport"]),
            "dport": int(r["dport"]),
            "proto": int(r["proto"]),
            "packets": int(r["packets"]),
            "bytes": int(r["bytes"]),
            "sampling": float(r["sampling"]),
            "vlan": int(r["vlan"]),
            "version": int(r["version"]),
        }


def flow_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a pcap as dicts, in order."""
    return [d for rows in flow_rows(path) for d in as_dicts(rows)]


def flow_line(record: dict[str, Any]) -> str:
    """A flow record as one short human line."""
    return (f"{record['time']:.3f} {record['exporter']} {record['src']}:{record['sport']} > {record['dst']}:{record['dport']}"
            f" proto {record['proto']} packets {record['packets']} bytes {record['bytes']} sampling 1/{record['sampling']:g}")


def print_flows(path: str | Path, as_json: bool, write: Any) -> None:
    """Write every flow record of a pcap, one per line (JSON objects with ``as_json``)."""
    import json

    for rows in flow_rows(path):
        for record in as_dicts(rows):
            write((json.dumps(record) if as_json else flow_line(record)) + "\n")
