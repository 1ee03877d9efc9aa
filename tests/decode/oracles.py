"""Readers for the peers' expected NTP outputs in the corpus (tshark JSON, Zeek logs, tcpdump -v text).

Each reader returns plain dicts in the peer's own units; the tests convert ours to
match, so a mismatch shows both values as the peer wrote them.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from netmon.decode.frames import decode_with_index
from netmon.sources.pcapfile import read_frames

#: pcaps of the corpus that carry NTP, relative to the corpus folder
NTP_PCAPS = (
    "tcpdump/ntp.pcap", "tcpdump/ntp-control.pcap", "tcpdump/ntp-mode7.pcap", "tcpdump/ntp-time.pcap",
    "tcpdump/ntp-time-ef.pcap", "zeek/NTP-digest.pcap", "zeek/NTP_sync.pcap", "zeek/misordered-ntp.pcap",
    "zeek/ntp-no-extensions-mac.pcap", "zeek/ntp.pcap", "zeek/ntp2.pcap", "zeek/ntpmode67.pcap",
    "zeek/toplevel-ntp.pcap", "suricata/ntp-keywords.pcap", "scapy/scapy-ntp-vectors.wrapped.pcap",
)


def decode_file(path: Path) -> dict[int, np.void]:
    """Our rows of a capture keyed by 1-based frame number (as tshark and tcpdump count)."""
    out: dict[int, np.void] = {}
    base = 0
    for frames in read_frames(path):
        rows, index = decode_with_index(frames)
        out.update({base + int(i) + 1: row for i, row in zip(index, rows)})
        base += len(frames)
    return out


def tshark_time(text: str) -> float:
    """tshark's 'Jun 19, 2017 14:12:09.516015118 UTC' (or NULL) as UNIX seconds."""
    if text == "NULL":
        return 0.0
    stamp, fraction = text.rsplit(".", 1)
    digits = fraction.split(" ")[0]
    whole = datetime.datetime.strptime(stamp, "%b %d, %Y %H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return whole.timestamp() + int(digits) / 10 ** len(digits)


def tshark_ntp(path: Path) -> dict[int, dict[str, Any]]:
    """The ntp layer of every frame tshark decoded as NTP, keyed by frame number."""
    packets = json.loads(path.with_suffix(".tshark.json").read_text())
    out = {}
    for packet in packets:
        layers = packet["_source"]["layers"]
        if "ntp" in layers:
            out[int(layers["frame"]["frame.number"])] = layers["ntp"]
    return out


def zeek_log(path: Path) -> list[dict[str, str]]:
    """Rows of a Zeek TSV log as dicts of field -> text."""
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"))))
    return rows


ZEEK_UNITS = {"day": 86400.0, "days": 86400.0, "hr": 3600.0, "hrs": 3600.0, "min": 60.0, "mins": 60.0,
              "sec": 1.0, "secs": 1.0, "msec": 1e-3, "msecs": 1e-3, "usec": 1e-6, "usecs": 1e-6}


def zeek_interval(text: str) -> float:
    """Zeek's printed interval ('1.0 min 4.0 secs', '15.0 msecs 625.0 usecs') in seconds."""
    parts = text.split()
    return sum(float(parts[i]) * ZEEK_UNITS[parts[i + 1]] for i in range(0, len(parts), 2))


def zeek_bytes(text: str) -> bytes:
    """Zeek's escaped byte string ('GPS\\x00') as bytes.

    Zeek writes non-printable bytes as \\xNN and everything else as is, a backslash
    too, so only a backslash followed by x and two hex digits is an escape.
    """
    out = bytearray()
    i = 0
    while i < len(text):
        if text.startswith("\\x", i) and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            out.append(ord(text[i]))
            i += 1
    return bytes(out)


def zeek_messages(path: Path) -> list[dict[str, str]]:
    """Every ``ntp_message`` event printed in a Zeek .stdout baseline, fields as text."""
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("ntp_message") or "[" not in line:
            continue
        body = line[line.index("[") + 1:]
        fields: dict[str, str] = {}
        for match in re.finditer(r"(\w+)=((?:\\.|[^,\]\[])*)", body):
            fields.setdefault(match.group(1), match.group(2))
        if digest := re.search(r"digest=(.*?), num_exts=", body):  # a digest may hold commas and brackets
            fields["digest"] = digest.group(1)
        out.append(fields)
    return out


TCPDUMP_PACKET = re.compile(r"^\s+(\d+)\s+\d{4}-\d\d-\d\d ")


def tcpdump_verbose(path: Path) -> dict[int, dict[str, Any]]:
    """NTP fields of each packet in a tcpdump ``-v`` output, keyed by packet number."""
    out: dict[int, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        start = TCPDUMP_PACKET.match(line)
        if start:
            current = {"exts": 0}
            out[int(start.group(1))] = current
        if m := re.search(r"NTPv(\d), ([\w ]+), length (\d+)", line):
            current.update(version=int(m.group(1)), kind=m.group(2), length=int(m.group(3)))
        if m := re.search(r"Leap indicator:.*\((\d+)\)", line):
            current["leap_bits"] = int(m.group(1))
        if m := re.search(r"Stratum (\d+) .*poll (-?\d+) .*precision (-?\d+)", line):
            current.update(stratum=int(m.group(1)), poll=int(m.group(2)), precision=int(m.group(3)))
        if m := re.search(r"Root Delay: ([\d.]+), Root dispersion: ([\d.]+), Reference-ID: (.*)$", line):
            current.update(root_delay=m.group(1), root_disp=m.group(2), ref_id=m.group(3).strip())
        if m := re.search(r"(Reference|Origin|Receive|Transmit) Timestamp:\s+(\d+)\.(\d+)", line):
            current[m.group(1)] = (int(m.group(2)), int(m.group(3)))
        if m := re.search(r"Key id: (\d+)", line):
            current["key_id"] = int(m.group(1))
        if m := re.search(r"Authentication: ([0-9a-f]+)", line):
            current["digest_len"] = len(m.group(1)) // 2
        if re.search(r"\(0x[0-9a-f]{4}\), length \d+", line):
            current["exts"] += 1
        if m := re.search(r"(Request|Response), (OK|Error), (More|Last), OpCode=(\d+)", line):
            current.update(response=m.group(1) == "Response", opcode=int(m.group(4)))
    return out
