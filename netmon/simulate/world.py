"""Every address in a simulated campus and the outside world, with what a server does.

Addresses are held once, by index, so request events carry a 4-byte index and the
wire fields (address halves, stratum, reference ID, round-trip time) are looked up
per batch with numpy.

Outside addresses come from documentation and benchmark ranges (TEST-NETs,
198.18.0.0/15, 2001:db8::/32): the simulator never sends anything, but a capture
it writes must never name a real server either.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np

from netmon.batch import addr_halves

GPS = int.from_bytes(b"GPS\0", "big")
PPS = int.from_bytes(b"PPS\0", "big")


@dataclass
class AddressBook:
    """Addresses by index; server attributes are meaningful only where a host answers NTP.

    ``rtt`` is the round trip from the campus edge to the address and back (seconds);
    ``strict`` servers rate-limit with KoD RATE (``restrict limited kod``), with classic
    ntpd's leaky bucket, or with ntpsec's decaying score where ``ntpsec`` is set
    (``netmon.simulate.ratelimit``); ``answer`` is the share of requests a server replies to.
    """

    text: list[str] = field(default_factory=list)
    hi: list[int] = field(default_factory=list)
    lo: list[int] = field(default_factory=list)
    stratum: list[int] = field(default_factory=list)
    ref_id: list[int] = field(default_factory=list)
    rtt: list[float] = field(default_factory=list)
    strict: list[bool] = field(default_factory=list)
    answer: list[float] = field(default_factory=list)
    ntpsec: list[bool] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    _arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def add(
        self,
        text: str,
        stratum: int = 2,
        ref_id: int = 0,
        rtt: float = 0.02,
        strict: bool = False,
        answer: float = 0.995,
        ntpsec: bool = False,
    ) -> int:
        """Index of ``text``, added with these server attributes if new."""
        if text in self.index:
            return self.index[text]
        hi, lo = addr_halves(text)
        self.text.append(text)
        self.hi.append(hi)
        self.lo.append(lo)
        self.stratum.append(stratum)
        self.ref_id.append(ref_id)
        self.rtt.append(rtt)
        self.strict.append(strict)
        self.answer.append(answer)
        self.ntpsec.append(ntpsec)
        self.index[text] = len(self.text) - 1
        self._arrays.clear()
        return self.index[text]

    def arrays(self) -> dict[str, np.ndarray]:
        """Column arrays of every attribute, for per-batch lookups."""
        if not self._arrays:
            self._arrays = {
                "hi": np.array(self.hi, dtype=np.uint64),
                "lo": np.array(self.lo, dtype=np.uint64),
                "stratum": np.array(self.stratum, dtype=np.uint8),
                "ref_id": np.array(self.ref_id, dtype=np.uint32),
                "rtt": np.array(self.rtt, dtype=np.float64),
                "strict": np.array(self.strict, dtype=bool),
                "answer": np.array(self.answer, dtype=np.float64),
                "ntpsec": np.array(self.ntpsec, dtype=bool),
                "v6": np.array([":" in t for t in self.text], dtype=bool),
            }
        return self._arrays


class Allocator:
    """Hands out distinct addresses from a prefix in a random order (hosts sit all over a campus).

    ``step`` spaces them (2^64 puts each IPv6 host in a /64 of its own); at most
    65,536 slots are drawn from; running out is a clear error.
    """

    def __init__(self, prefix: str, rng: np.random.Generator | None = None, step: int = 1) -> None:
        self.network = ipaddress.ip_network(prefix, strict=False)
        self.step = step
        slots = min(self.network.num_addresses // step - (2 if step == 1 else 0), 1 << 16)
        if slots < 1:
            raise ValueError(f"prefix {self.network} is too small for simulated hosts")
        order = rng.permutation(slots) if rng is not None else np.arange(slots)
        self.slots = order + (1 if step == 1 else 0)
        self.next = 0

    def take(self) -> str:
        if self.next >= len(self.slots):
            raise ValueError(f"prefix {self.network} has no room for more simulated hosts; give a larger --internal prefix")
        slot = int(self.slots[self.next])
        self.next += 1
        return str(self.network.network_address + slot * self.step + (1 if self.step > 1 else 0))


def ref_id_of(text: str) -> int:
    """A reference ID naming an upstream IPv4 server (stratum 2 and below)."""
    ip = ipaddress.ip_address(text)
    return int(ip) if ip.version == 4 else int.from_bytes(ip.packed[:4], "big")
