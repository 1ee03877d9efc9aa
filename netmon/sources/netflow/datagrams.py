"""UDP datagrams (payload, sender address, ports, time) out of captured frames.

A pcap of export traffic holds link/IP/UDP headers around each export datagram.
The headers are read by :mod:`netmon.decode.packets`, netmon's one L2-L4 parser
(every link type the NTP path reads, VLAN tags, IPv6 extension headers); this
module only cuts the payloads out. A datagram the capture cut short is counted
(``decode.skip.truncated``) and skipped: a partial export is no export.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from netmon import health
from netmon.batch import Frames, addr_text
from netmon.decode.packets import udp_packets


class Datagram(NamedTuple):
    """One UDP payload with its sender (address text, port), receiver port and time (UNIX s).

    From a listener the payload is a read-only view into the block of datagrams it arrived in, or its
    own copy when others of that block were denied or refused (a view would keep them alive).
    """

    payload: bytes | memoryview
    source: str
    sport: int
    dport: int
    time: float


def udp_datagrams(frames: Frames, ports: tuple[int, ...] | None = None, share: bool = False) -> Iterator[Datagram]:
    """The UDP datagrams in a batch of frames sent to one of ``ports`` (None: any), in capture order.
    ``share``: the NTP decoder reads the same batch next and takes this parse of its layers."""
    found = udp_packets(frames, ports, share=share)
    if not len(found):
        return
    whole = found.captured >= found.payload_len
    if not whole.all():
        health.count("decode.skip.truncated", int(np.count_nonzero(~whole)))
    data = frames.data.tobytes()
    names: dict[tuple[int, int], str] = {}
    for i in np.flatnonzero(whole).tolist():
        key = (int(found.src_hi[i]), int(found.src_lo[i]))
        source = names.get(key) or names.setdefault(key, addr_text(*key))
        at = int(found.payload_at[i])
        yield Datagram(data[at : at + int(found.payload_len[i])], source, int(found.sport[i]), int(found.dport[i]),
                       float(frames.time[int(found.index[i])]))
