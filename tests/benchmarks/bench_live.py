"""Live collectors: what the eBPF program costs the kernel, what reading its maps costs user
space, and how many packets/s the AF_PACKET source keeps. Run as root:

    .venv/bin/python tests/benchmarks/bench_live.py [--seconds 3] [--hosts 100000]

1. kernel cost per packet, per kind of traffic (non-NTP TCP, non-NTP UDP, NTP over IPv4 and
   over IPv6), from kernel.bpf_stats_enabled (run_time_ns / run_cnt of the ingress program),
   for netmon's program and for the floor: the same object built with ``-DNETMON_FLOOR``, whose
   classifier returns at once, attached the same way; frames are sent from an AF_PACKET socket
   so every kind reaches the program at the same rate;
2. veth throughput (UDP/123, 48-byte payloads, sendmmsg/recvmmsg in C) without and with the
   program attached, as a ratio;
3. user space: one map read (batch lookups), counter deltas and rows for N hosts;
4. AF_PACKET: packets/s the source drains and decodes (ring filled first, then drained),
   and a live run at the sender's full speed with the kernel's drop counter.

Everything runs in network namespaces this script creates and removes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from netmon import health  # noqa: E402
from netmon.decode.frames import decode_frames  # noqa: E402
from netmon.sources import capture  # noqa: E402
from netmon.sources.ebpf import CounterDeltas, libbpf, loader, rows_from_counts  # noqa: E402
from tests.support.lab import Lab  # noqa: E402
from ratios import record  # noqa: E402

BLASTER = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#define BATCH 64
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static int hexval(char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }
static int frames(char **argv) {
    /* blast frame IFINDEX HEX SECONDS: one Ethernet frame, sent again and again on a packet socket */
    int s = socket(AF_PACKET, SOCK_RAW, 0);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = atoi(argv[2]), .sll_halen = 6};
    unsigned char frame[1600]; size_t len = strlen(argv[3]) / 2;
    for (size_t i = 0; i < len && i < sizeof(frame); i++) frame[i] = hexval(argv[3][2 * i]) << 4 | hexval(argv[3][2 * i + 1]);
    struct iovec iov = {frame, len}; struct mmsghdr m[BATCH];
    memset(m, 0, sizeof(m));
    for (int i = 0; i < BATCH; i++) {
        m[i].msg_hdr.msg_name = &to; m[i].msg_hdr.msg_namelen = sizeof(to);
        m[i].msg_hdr.msg_iov = &iov; m[i].msg_hdr.msg_iovlen = 1;
    }
    long n = 0; double end = now() + atof(argv[4]);
    while (now() < end) { int r = sendmmsg(s, m, BATCH, 0); if (r > 0) n += r; }
    printf("%ld\n", n);
    return 0;
}
int main(int argc, char **argv) {
    /* blast send DST SECONDS | blast recv SECONDS: UDP/123, 48-byte NTP-shaped payloads */
    if (strcmp(argv[1], "frame") == 0) return frames(argv);
    int send_mode = strcmp(argv[1], "send") == 0;
    double seconds = atof(argv[send_mode ? 3 : 2]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(123)};
    unsigned char buf[BATCH][64]; struct iovec iov[BATCH]; struct mmsghdr m[BATCH];
    memset(m, 0, sizeof(m));
    for (int i = 0; i < BATCH; i++) {
        memset(buf[i], 0, 64); buf[i][0] = 0x23;
        iov[i].iov_base = buf[i]; iov[i].iov_len = send_mode ? 48 : 64;
        m[i].msg_hdr.msg_iov = &iov[i]; m[i].msg_hdr.msg_iovlen = 1;
    }
    long n = 0;
    if (send_mode) {
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        connect(s, (struct sockaddr *)&a, sizeof(a));
    } else {
        int big = 1 << 24; setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
        bind(s, (struct sockaddr *)&a, sizeof(a));
        struct timeval tv = {0, 100000}; setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    double end = now() + seconds;
    while (now() < end) {
        int r = send_mode ? sendmmsg(s, m, BATCH, 0) : recvmmsg(s, m, BATCH, 0, NULL);
        if (r > 0) n += r;
    }
    printf("%ld\n", n);
    return 0;
}
"""


def build_blaster(tmp: Path) -> Path:
    source, binary = tmp / "blast.c", tmp / "blast"
    source.write_text(BLASTER)
    subprocess.run(["clang", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def veth_pair(lab: Lab):
    tx, rx = lab.namespace("tx"), lab.namespace("rx")
    tx_if, rx_if = lab.link(tx, "10.88.0.2/24", rx, "10.88.0.1/24", name="p")
    return tx, rx, tx_if, rx_if


def throughput(blast: Path, tx, rx, seconds: float) -> tuple[float, float]:
    """(packets/s sent, packets/s received by a socket) over ``seconds``."""
    recv = subprocess.Popen(["ip", "netns", "exec", rx.name, str(blast), "recv", str(seconds + 1)],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    sent = tx.exec([str(blast), "send", "10.88.0.1", str(seconds)]).stdout
    got = recv.communicate()[0]
    return int(sent) / seconds, int(got) / seconds


def prog_stats(rx, rx_if: str) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the ingress and egress programs on ``rx_if``."""
    total_ns = total_cnt = 0
    for hook in ("ingress", "egress"):
        text = rx.exec(["tc", "filter", "show", "dev", rx_if, hook]).stdout
        for prog_id in re.findall(r" id (\d+) name netmon_", text):
            info = json.loads(subprocess.run(["bpftool", "prog", "show", "id", prog_id, "--json"],
                                             capture_output=True, text=True, check=True).stdout)
            total_ns += info.get("run_time_ns", 0)
            total_cnt += info.get("run_cnt", 0)
    return total_ns, total_cnt


def kinds_of_traffic(dst_mac: str) -> dict[str, bytes]:
    """One frame per kind of edge traffic, from an internal host (10.88.0.2 / fd00:88::2)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.layers.ntp import NTPHeader

    eth = Ether(src="02:00:00:00:88:02", dst=dst_mac)
    v4, v6 = IP(src="10.88.0.2", dst="10.88.0.1"), IPv6(src="fd00:88::2", dst="fd00:88::1")
    ntp = NTPHeader(version=4, mode=3, poll=6)
    return {
        "TCP/443, IPv4 (not NTP)": bytes(eth / v4 / TCP(sport=40000, dport=443, flags="A") / (b"x" * 40)),
        "UDP/53, IPv4 (not NTP)": bytes(eth / v4 / UDP(sport=40000, dport=53) / (b"x" * 48)),
        "TCP/443, IPv6 (not NTP)": bytes(eth / v6 / TCP(sport=40000, dport=443, flags="A") / (b"x" * 40)),
        "NTP request, IPv4": bytes(eth / v4 / UDP(sport=40000, dport=123) / ntp),
        "NTP request, IPv6": bytes(eth / v6 / UDP(sport=40000, dport=123) / ntp),
    }


def floor_program(tmp: Path) -> Path:
    """netmon's object built with NETMON_FLOOR: same maps and sections, a classifier that returns at once."""
    target = tmp / "ntp_tc_floor.o"
    subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-DNETMON_FLOOR", *loader.program_defines(),
                    *[f"-I{d}" for d in loader.include_dirs()],
                    "-c", str(loader.SOURCE), "-o", str(target)], check=True)
    return target


def ns_per_packet(blast: Path, tx, tx_if: str, rx, rx_if: str, frame: bytes, seconds: float, program: Path | None) -> float:
    """Median-free single measure: run_time_ns / run_cnt of the ingress program while ``frame`` is blasted."""
    ifindex = tx.exec(["cat", f"/sys/class/net/{tx_if}/ifindex"]).stdout.strip()
    att = loader.attach(rx_if, rx.name, max_hosts=65536, object_path=program)
    att.set_internal(["10.88.0.0/24", "fd00:88::/64"])  # the sender is internal, as at a campus edge
    att.set_sampling(20000, 2000)
    stats_before = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    try:
        tx.exec([str(blast), "frame", ifindex, frame.hex(), str(seconds)])
        run_ns, runs = prog_stats(rx, rx_if)
    finally:
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text(stats_before)
        loader.detach(att)
    return run_ns / max(runs, 1)


def bench_kernel(blast: Path, tmp: Path, seconds: float, rounds: int) -> None:
    floor = floor_program(tmp)
    with Lab() as lab:
        tx, rx, tx_if, rx_if = veth_pair(lab)
        rx_mac = rx.exec(["cat", f"/sys/class/net/{rx_if}/address"]).stdout.strip()
        print(f"{'kernel cost per packet':28s} {'netmon ns':>10s} {'floor ns':>10s} {'netmon/floor':>13s}")
        for kind, frame in kinds_of_traffic(rx_mac).items():
            ours = [ns_per_packet(blast, tx, tx_if, rx, rx_if, frame, seconds, None) for _ in range(rounds)]
            empty = [ns_per_packet(blast, tx, tx_if, rx, rx_if, frame, seconds, floor) for _ in range(rounds)]
            a, b = statistics.median(ours), statistics.median(empty)
            print(f"{kind:28s} {a:10.0f} {b:10.0f} {a / b:12.2f}x")
            if kind.startswith("NTP"):
                record("kernel", f"eBPF program, {kind}", a, "ns/packet", "lower", bar="<= 150")
            else:
                record("kernel", f"eBPF program, {kind}", a, "ns/packet", "lower", "empty program (floor)", b, "<= 1.5")
        without, with_prog = [], []
        for _ in range(rounds):
            without.append(throughput(blast, tx, rx, seconds)[1])
            att = loader.attach(rx_if, rx.name, max_hosts=65536)
            att.set_internal(["10.88.0.2/32"])
            att.set_sampling(20000, 2000)
            try:
                with_prog.append(throughput(blast, tx, rx, seconds)[1])
            finally:
                loader.detach(att)
    base, prog = statistics.median(without), statistics.median(with_prog)
    print(f"veth UDP/123 to a socket    {base:10.0f} pkt/s without, {prog:10.0f} pkt/s with the program: "
          f"ratio {prog / base:.3f} (no program costs 0 ns: the floor above is what attaching any program costs)")


def bench_maps(hosts: int) -> None:
    obj, maps, _ = loader.load(loader.compile_program(), max(2 * hosts, 1024))
    fd = maps["netmon_counters"]
    try:
        keys = np.zeros(hosts, loader.KEY_DTYPE)
        keys["host_hi"] = 0xFFFF
        keys["host_lo"] = (0xFFFF << 32) | (0x0A000000 + np.arange(hosts, dtype=np.uint64))
        keys["mode"] = 3
        vals = np.zeros(hosts, loader.VAL_DTYPE)
        vals["packets"] = 10
        vals["bytes"] = 760
        vals["sampled_packets"] = 4
        vals["sampled_bytes"] = 304
        lib = libbpf.lib()
        count = ctypes.c_uint32(hosts)
        opts = libbpf.BatchOpts(ctypes.sizeof(libbpf.BatchOpts), 0, 0)
        libbpf.check(lib.bpf_map_update_batch(fd, keys.ctypes.data, vals.ctypes.data, ctypes.byref(count),
                                              ctypes.byref(opts)), "update batch")
        deltas = CounterDeltas()
        times = []
        for round_ in range(5):
            start = time.perf_counter()
            k, v = loader.lookup_all(fd, loader.KEY_DTYPE, loader.VAL_DTYPE, max(2 * hosts, 1024))
            read = time.perf_counter()
            new_keys, packets, nbytes = deltas.update(k, v)
            rows = rows_from_counts(new_keys, packets, nbytes, time.time())
            times.append((read - start, time.perf_counter() - read))
            assert len(k) == hosts, f"read {len(k)} of {hosts} entries"
            if round_ == 0:
                assert len(rows) == hosts
        read_s = statistics.median(t[0] for t in times)
        delta_s = statistics.median(t[1] for t in times)
        print(f"map read, {hosts} hosts      {read_s * 1000:8.1f} ms batch lookup + {delta_s * 1000:.1f} ms deltas/rows "
              f"per interval ({(read_s + delta_s) / hosts * 1e9:.0f} ns per host)")
    finally:
        libbpf.lib().bpf_object__close(obj)


def bench_capture(blast: Path, seconds: float) -> None:
    with Lab() as lab:
        tx, rx, _, rx_if = veth_pair(lab)
        config = capture.Config(type="capture", interface=rx_if, netns=rx.name, ring_mb=256)
        # 1. drain rate: fill the ring while nobody reads, then read and decode it all
        ring = capture.Ring(config)
        sent = tx.exec([str(blast), "send", "10.88.0.1", "0.5"]).stdout
        time.sleep(0.3)
        start = time.perf_counter()
        kept = 0
        while True:
            frames, times, wirelens = ring.read(0)
            if not frames:
                break
            rows = decode_frames(capture.frames_from(frames, times, wirelens))
            kept += len(rows)
        took = time.perf_counter() - start
        _, drops, _ = ring.statistics()
        ring.close()
        print(f"AF_PACKET drain + decode    {kept / took:10.0f} pkt/s ({kept} of {int(sent)} sent kept, "
              f"{drops} dropped while the ring filled)")
        # 2. live: the source reading while the sender runs flat out
        health.reset()
        source = capture.CaptureSource(config)
        iterator = source.batches()
        counted = []
        reader = threading.Thread(target=lambda: counted.extend(len(decode_frames(i)) for i in iterator
                                                                 if isinstance(i, capture.Frames)))
        reader.start()
        time.sleep(0.3)
        sent = int(tx.exec([str(blast), "send", "10.88.0.1", str(seconds)]).stdout)
        time.sleep(0.5)
        source.stop()
        reader.join()
        source.close()
        drops = health.snapshot().get("source.capture.kernel_drops", 0)
        print(f"AF_PACKET live              {sum(counted) / seconds:10.0f} pkt/s kept of {sent / seconds:.0f} pkt/s "
              f"sent, kernel drops {drops:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        blast = build_blaster(Path(tmp))
        bench_kernel(blast, Path(tmp), args.seconds, args.rounds)
        bench_maps(args.hosts)
        bench_capture(blast, args.seconds)


if __name__ == "__main__":
    main()
