"""Crafted NTP traffic for the live tests, run inside a lab namespace:

    ip netns exec NS python -m tests.live.traffic requests --dst 10.66.0.2 --count 500
    ip netns exec NS python -m tests.live.traffic frames --iface X --dst-mac M --src 10.66.0.2 \
        --dst 10.77.2.2 --vlan 100 --vlan 200 --count 20 --kod RATE

Only ever addresses given on the command line, which the tests take from the lab.
"""

from __future__ import annotations

import argparse
import random

from scapy.all import IP, UDP, Dot1AD, Dot1Q, Ether, IPv6, NTPHeader, conf, send, sendp
from scapy.supersocket import L3RawSocket


def ntp_header(mode: int, kod: str, rng: random.Random, poll: int | None = None) -> NTPHeader:
    """A mode-3 request with a random transmit timestamp (and poll, unless given), or a mode-4 KoD reply."""
    if kod:
        return NTPHeader(leap=3, version=4, mode=4, stratum=0, poll=6, ref_id=int.from_bytes(kod.encode(), "big"),
                         orig=rng.random() * 2**31, sent=rng.random() * 2**31)
    return NTPHeader(leap=0, version=rng.choice((3, 4)), mode=mode, poll=rng.randint(4, 10) if poll is None else poll,
                     sent=3.9e9 + rng.random() * 1e8, orig=rng.choice((0, 3.9e9 + rng.random())))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("requests", "frames"))
    parser.add_argument("--dst", required=True)
    parser.add_argument("--src", default="")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--iface", default="")
    parser.add_argument("--dst-mac", default="ff:ff:ff:ff:ff:ff")
    parser.add_argument("--vlan", type=int, action="append", default=[])
    parser.add_argument("--kod", default="")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sport", type=int, default=0, help="requests' source port (default: random, one per request)")
    parser.add_argument("--poll", type=int, default=None, help="requests' advertised poll, log2 s (default: random 4-10)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    conf.verb = 0
    ip = IPv6 if ":" in args.dst else IP
    if ip is IP:
        # The kernel routes IPv4 and resolves the next hop (queueing packets while ARP is
        # pending); scapy's own ARP can time out on a loaded machine and send to broadcast.
        conf.L3socket = L3RawSocket
    packets = []
    for _ in range(args.count):
        layer3 = ip(dst=args.dst, src=args.src) if args.src else ip(dst=args.dst)
        sport = 123 if args.kod else (args.sport or rng.randint(1024, 65535))
        packets.append(layer3 / UDP(sport=sport, dport=123 if not args.kod else rng.randint(1024, 65535))
                       / ntp_header(3, args.kod, rng, args.poll))
    if args.kind == "requests":
        send(packets)
        return
    frames = []
    for packet in packets:
        tags = Ether(dst=args.dst_mac)
        for i, vid in enumerate(args.vlan):  # the first tag is the outer one: 802.1ad when stacked
            tags = tags / (Dot1AD(vlan=vid) if i == 0 and len(args.vlan) > 1 else Dot1Q(vlan=vid))
        frames.append(tags / packet)
    sendp(frames, iface=args.iface)


if __name__ == "__main__":
    main()
