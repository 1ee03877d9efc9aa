"""Hostile inputs end to end, through the commands a newcomer runs (seeded, well under 30 s).

tests/fuzz/test_decoders.py mangles bytes at random under each decoder; this pass aims
named, structured attacks at the whole command instead: the shipped capture cut, flipped,
re-written in every capture format netmon reads (nanosecond, big-endian, pcapng) and with
absurd lengths, snaplens, timestamps and link types, through ``netmon replay`` and
``netmon decode``; flow exports whose templates lie (zero or huge lengths and counts,
enterprise bits, option templates, withdrawals) beside exporters that keep exporting;
hand-edited configs through every command that reads one; checkpoints that are not files
or were edited by hand. The bar (DESIGN "Bars"): a clear error or a counted skip, never a
traceback, never a hang, and data from other exporters and files keeps flowing.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import random
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from netmon import health
from netmon.cli import main
from netmon.config import Detect
from netmon.detect import checkpoint
from netmon.detect.engine import Engine
from netmon.sinks.spool import Spool
from netmon.sources.netflow.collector import Collector
from netmon.sources.sflow import SflowDecoder
from tests.decode import builders
from tests.flows.support import NTP_FIELDS, ipfix, ntp_record, set_bytes, template_record, v9
from tests.fuzz import seeds

pytestmark = pytest.mark.timeout(60)  # a hang fails the test instead of the whole run

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "samples" / "campus-runaway.pcap.gz"
CASES = ROOT / "tests" / "cases"
INTERNAL = ["--internal", "10.20.0.0/16"]


def _records(count: int) -> tuple[bytes, list[bytes]]:
    """The shipped capture's file header and its first ``count`` records (header + data)."""
    data = gzip.decompress(SAMPLE.read_bytes())
    offset, out = 24, []
    while len(out) < count:
        length = struct.unpack_from("<I", data, offset + 8)[0]
        out.append(data[offset:offset + 16 + length])
        offset += 16 + length
    return data[:24], out


HEAD, RECORDS = _records(150)
SEED = HEAD + b"".join(RECORDS)
PACKETS = [r[16:] for r in RECORDS]
TIMES = [a + b / 1e6 for a, b in (struct.unpack_from("<II", r) for r in RECORDS)]


def _header(snaplen: int = 65535, linktype: int = 1, major: int = 2) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, major, 4, 0, 0, snaplen, linktype)


def _record(seconds: int, fraction: int, caplen: int, wirelen: int, packet: bytes) -> bytes:
    return struct.pack("<IIII", seconds, fraction, caplen, wirelen) + packet


def _pcapng_parts() -> tuple[bytes, bytes, bytes]:
    """Section header, interface description and packet blocks of a 5-packet pcapng."""
    whole = builders.pcapng_bytes(PACKETS[:5], times=TIMES[:5])
    shb = struct.unpack_from("<I", whole, 4)[0]
    idb = struct.unpack_from("<I", whole, shb + 4)[0]
    return whole[:shb], whole[shb:shb + idb], whole[shb + idb:]


def capture_variants() -> dict[str, bytes]:
    """Named captures: valid in an unusual form, or damaged in a named way."""
    rnd = random.Random(20261203)
    shb, idb, blocks = _pcapng_parts()
    out = {
        "empty": b"",
        "header-only": HEAD,
        "cut-in-file-header": HEAD[:10],
        "cut-in-record-header": SEED[:30],
        "cut-mid-packet": SEED[:len(SEED) // 2],
        "snaplen-0": _header(snaplen=0) + SEED[24:],
        "snaplen-4G": _header(snaplen=0xFFFFFFFF) + SEED[24:],
        "snaplen-below-caplen": _header(snaplen=20) + SEED[24:],
        "pcap-version-1": _header(major=1) + SEED[24:],
        "caplen-4G": HEAD + RECORDS[0] + _record(int(TIMES[1]), 0, 0xFFFFFFF0, 90, PACKETS[1]),
        "caplen-0": HEAD + b"".join(_record(int(t), 0, 0, 0, b"") for t in TIMES),
        "caplen-above-wirelen": HEAD + b"".join(_record(int(t), 0, len(p), 10, p) for t, p in zip(TIMES, PACKETS)),
        "microseconds-4G": HEAD + b"".join(_record(int(t), 0xFFFFFFFF, len(p), len(p), p) for t, p in zip(TIMES, PACKETS)),
        "timestamps-0": HEAD + b"".join(_record(0, 0, len(p), len(p), p) for p in PACKETS),
        "timestamps-2106": HEAD + b"".join(_record(0xFFFFFFFF, 999999, len(p), len(p), p) for p in PACKETS),
        "timestamps-scattered": HEAD + b"".join(
            _record(rnd.choice([0, int(t), 0xFFFFFFFF, int(t) - 10**8]), 0, len(p), len(p), p) for t, p in zip(TIMES, PACKETS)),
        "nanosecond": builders.pcap_bytes(PACKETS, nanosecond=True, times=TIMES),
        "big-endian": builders.pcap_bytes(PACKETS, endian=">", times=TIMES),
        "big-endian-nanosecond": builders.pcap_bytes(PACKETS, endian=">", nanosecond=True, times=TIMES),
        "pcapng": builders.pcapng_bytes(PACKETS, times=TIMES),
        "pcapng-big-endian-simple-blocks": builders.pcapng_bytes(PACKETS, endian=">", block="spb", times=TIMES),
        "pcapng-obsolete-packet-blocks": builders.pcapng_bytes(PACKETS, block="pb", times=TIMES),
        "pcapng-tsresol-2^-127": builders.pcapng_bytes(PACKETS, tsresol=0xFF, times=[0.0] * len(PACKETS)),
        "pcapng-tsresol-10^-127": builders.pcapng_bytes(PACKETS, tsresol=0x7F, times=[0.0] * len(PACKETS)),
        "pcapng-tsoffset-2^62": builders.pcapng_bytes(PACKETS, tsoffset=2**62, times=[2.0**62] * len(PACKETS)),
        "pcapng-no-interface": shb + blocks,
        "pcapng-block-length-0": shb + idb + struct.pack("<II", 6, 0) + blocks,
        "pcapng-block-length-13": shb + idb + struct.pack("<II", 6, 13) + blocks[8:],
        "pcapng-block-length-4G": shb + idb + struct.pack("<II", 6, 0xFFFFFFF0) + blocks[8:],
        "pcapng-section-length-4G": shb[:4] + struct.pack("<I", 0xFFFFFFFC) + shb[8:] + idb + blocks,
        "pcapng-interface-99": shb + idb + builders.pcapng_block(
            "<", 6, struct.pack("<IIIII", 99, 0, 0, len(PACKETS[0]), len(PACKETS[0])) + PACKETS[0]) + blocks,
        "pcapng-caplen-4G": shb + idb + builders.pcapng_block(
            "<", 6, struct.pack("<IIIII", 0, 0, 0, 0xFFFFFF00, 5) + PACKETS[0]) + blocks,
        "pcapng-unknown-block": shb + idb + builders.pcapng_block("<", 0x12345678, b"abcd") + blocks,
        "pcapng-option-length-64K": shb + builders.pcapng_block(
            "<", 1, struct.pack("<HHIHH", 1, 0, 0, 9, 0xFFFF) + b"\x06\0\0\0") + blocks,
        "pcapng-trailer-mismatch": shb + idb + blocks[:-4] + bytes(4),
        "pcapng-byte-order-magic": shb[:8] + b"\x11\x22\x33\x44" + shb[12:] + idb + blocks,
        "gzip-cut": gzip.compress(SEED, mtime=0)[:-20],
        "gzip-of-garbage": gzip.compress(rnd.randbytes(1000), mtime=0),
        "gzip-twice": gzip.compress(gzip.compress(SEED, mtime=0), mtime=0),
        "gzip-trailing-garbage": gzip.compress(SEED, mtime=0) + b"garbage",
    }
    for linktype in (0, 101, 108, 113, 127, 228, 276, 9999, 0xFFFF, 0xFFFFFFFF):
        out[f"linktype-{linktype}"] = _header(linktype=linktype) + SEED[24:]
    for index in range(12):
        data = bytearray(SEED)
        for _ in range(rnd.randint(1, 20)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        out[f"flipped-{index}"] = bytes(data)
    for index, value in enumerate((0, 0xFFFFFFFF, 0x7FFFFFFF, 0x10000)):
        data = bytearray(SEED)
        at = rnd.randrange(24, len(data) - 4)
        data[at:at + 4] = struct.pack("<I", value)
        out[f"u32-{value:#x}-at-{at}"] = bytes(data)
    return out


CAPTURES = capture_variants()


def _no_traceback(result: Result, what: str) -> None:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{what} raised {type(result.exception).__name__}: {result.exception}") from result.exception
    assert "Traceback" not in result.output, f"{what} printed a traceback:\n{result.output}"


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_damaged_or_unusual_capture_replays_and_decodes_with_a_clear_outcome(tmp_path: Path, name: str) -> None:
    path = tmp_path / (f"{name}.pcap.gz" if name.startswith("gzip") else f"{name}.pcap")
    path.write_bytes(CAPTURES[name])
    replayed = CliRunner().invoke(main, ["replay", str(path), *INTERNAL, "--db", str(tmp_path / "n.db")])
    _no_traceback(replayed, f"netmon replay of {name}")
    assert replayed.exit_code in (0, 1), f"replay of {name} exited {replayed.exit_code}: {replayed.output}"
    assert "scored" in replayed.output, f"replay of {name} did not report what it replayed: {replayed.output}"
    decoded = CliRunner().invoke(main, ["decode", str(path)])
    _no_traceback(decoded, f"netmon decode of {name}")
    assert decoded.exit_code == replayed.exit_code, f"decode and replay disagree on {name}: {decoded.output}"
    if replayed.exit_code == 1:
        for result in (replayed, decoded):
            assert f"Error: {path}" in result.output and "byte offset" in result.output, \
                f"a damaged {name} must be named with the offset of the fault: {result.output}"


def test_a_damaged_capture_does_not_stop_the_files_after_it(tmp_path: Path) -> None:
    good = tmp_path / "good.pcap"
    good.write_bytes(SEED)
    alone = CliRunner().invoke(main, ["replay", str(good), *INTERNAL, "--db", str(tmp_path / "a.db")])
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(CAPTURES["caplen-4G"])
    both = CliRunner().invoke(main, ["replay", str(damaged), str(good), *INTERNAL, "--db", str(tmp_path / "b.db")])
    _no_traceback(both, "replay of a damaged and a good file")
    assert both.exit_code == 1 and f"Error: {damaged}" in both.output, both.output
    def scored(result: Result) -> list[str]:
        return [line for line in result.output.splitlines() if "scored" in line]
    assert scored(both) and scored(both) == scored(alone), \
        f"the good file after the damaged one was not replayed whole: {scored(both)} vs {scored(alone)}"


# --- flow exports: templates that lie, beside exporters that keep exporting ---------------

NTP = ntp_record("10.0.0.1", "192.0.2.1", 40000, 123, 1, 76, 0)
GOOD_TEMPLATE = ipfix([set_bytes(2, template_record(300, NTP_FIELDS))], domain=5)
GOOD_DATA = ipfix([set_bytes(300, NTP)], domain=5)


def _template(template_id: int, count: int, fields: bytes = b"") -> bytes:
    return struct.pack("!HH", template_id, count) + fields


def _ipfix_options(template_id: int, count: int, scope: int, fields: list[tuple[int, int]]) -> bytes:
    return struct.pack("!HHH", template_id, count, scope) + b"".join(struct.pack("!HH", *f) for f in fields)


def _v9_options(template_id: int, scope_bytes: int, option_bytes: int, fields: list[tuple[int, int]]) -> bytes:
    return struct.pack("!HHH", template_id, scope_bytes, option_bytes) + b"".join(struct.pack("!HH", *f) for f in fields)


def hostile_exports() -> dict[str, bytes]:
    v5 = seeds.netflow_v5()
    header = struct.pack("!HHIII", 10, 20, 1_700_000_000, 0, 1)
    return {
        "ipfix-field-count-0": ipfix([set_bytes(2, _template(300, 0)), set_bytes(300, NTP)]),
        "ipfix-field-count-64K": ipfix([set_bytes(2, _template(301, 65535, struct.pack("!HH", 8, 4) * 3))]),
        "ipfix-16000-fields": ipfix([set_bytes(2, _template(301, 16000, struct.pack("!HH", 8, 4) * 16000))]),
        "ipfix-field-length-0": ipfix([set_bytes(2, template_record(302, [(8, 0), (12, 0)])), set_bytes(302, NTP)]),
        "ipfix-field-length-65000": ipfix([set_bytes(2, template_record(303, [(8, 65000), (12, 4)])), set_bytes(303, NTP)]),
        "ipfix-variable-length-cut": ipfix([set_bytes(2, template_record(304, [(8, 65535), (12, 4)])),
                                            set_bytes(304, b"\xff\x00")]),
        "ipfix-variable-length-only": ipfix([set_bytes(2, template_record(305, [(315, 65535)])), set_bytes(305, bytes(64))]),
        "ipfix-enterprise-bits": ipfix([set_bytes(2, template_record(306, [(8 | 0x8000, 4, 9), (12, 4),
                                                                           (7 | 0x8000, 2, 0xFFFFFFFF)])),
                                        set_bytes(306, NTP)]),
        "ipfix-enterprise-number-cut": ipfix([set_bytes(2, _template(306, 1, struct.pack("!HH", 0x8008, 4)))]),
        "ipfix-template-id-255": ipfix([set_bytes(2, template_record(255, NTP_FIELDS)), set_bytes(255, NTP)]),
        "ipfix-set-id-1": ipfix([set_bytes(1, template_record(300, NTP_FIELDS))]),
        "ipfix-set-length-0": header + struct.pack("!HH", 2, 0),
        "ipfix-set-length-64K": header[:2] + struct.pack("!H", 24) + header[4:] + struct.pack("!HH", 2, 65535) + bytes(4),
        "ipfix-message-length-0": header[:2] + b"\0\0" + header[4:16],
        "ipfix-message-length-64K": header[:2] + b"\xff\xff" + header[4:16] + GOOD_TEMPLATE[16:],
        "ipfix-withdraw-every-template": ipfix([set_bytes(2, _template(2, 0))]),
        "ipfix-options-scope-0": ipfix([set_bytes(3, _ipfix_options(310, 2, 0, [(34, 4), (160, 8)])),
                                        set_bytes(310, bytes(12))]),
        "ipfix-options-scope-above-count": ipfix([set_bytes(3, _ipfix_options(311, 1, 5, [(149, 4)])),
                                                  set_bytes(311, bytes(4))]),
        "ipfix-options-no-fields": ipfix([set_bytes(3, _ipfix_options(312, 0, 0, []))]),
        "ipfix-options-sampling-4G": ipfix([set_bytes(3, _ipfix_options(314, 2, 1, [(149, 4), (34, 4)])),
                                            set_bytes(314, struct.pack("!II", 1, 0xFFFFFFFF))]),
        "ipfix-options-sampling-0": ipfix([set_bytes(3, _ipfix_options(315, 2, 1, [(149, 4), (34, 4)])),
                                           set_bytes(315, struct.pack("!II", 1, 0))]),
        "v9-field-count-0": v9([set_bytes(0, _template(300, 0))]),
        "v9-field-count-64K": v9([set_bytes(0, _template(300, 65535))]),
        "v9-field-length-0": v9([set_bytes(0, template_record(300, [(8, 0)] * 5)), set_bytes(300, bytes(40))]),
        "v9-field-length-65535": v9([set_bytes(0, template_record(300, [(8, 65535)])), set_bytes(300, bytes(40))]),
        "v9-4000-fields": v9([set_bytes(0, template_record(330, [(8, 4)] * 4000))]),
        "v9-options-odd-scope": v9([set_bytes(1, _v9_options(320, 3, 4, [(34, 4)])), set_bytes(320, bytes(8))]),
        "v9-options-length-64K": v9([set_bytes(1, _v9_options(321, 4, 65532, [(1, 4), (34, 4)]))]),
        "v9-options-empty": v9([set_bytes(1, _v9_options(322, 0, 0, [])), set_bytes(322, bytes(8))]),
        "v9-options-sampling-4G": v9([set_bytes(1, _v9_options(324, 4, 4, [(1, 4), (34, 4)])),
                                      set_bytes(324, struct.pack("!II", 0, 0xFFFFFFFF))]),
        "v9-count-65535": struct.pack("!HHIIII", 9, 65535, 0, 1_700_000_000, 0, 1)
        + set_bytes(0, template_record(300, [(f[0], f[1]) for f in NTP_FIELDS])),
        "v5-count-0": v5[:2] + b"\0\0" + v5[4:24],
        "v5-count-65535": v5[:2] + b"\xff\xff" + v5[4:],
        "v5-sampling-reserved-mode": v5[:22] + b"\xff\xff" + v5[24:],
        "version-65535": b"\xff\xff" + v5[2:],
        "one-byte": b"\x00",
    }


EXPORTS = hostile_exports()


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_hostile_flow_export_is_skipped_or_decoded_and_other_exporters_keep_flowing(name: str) -> None:
    health.reset()
    collector = Collector(max_templates=64, max_pending=8)
    collector.feed(GOOD_TEMPLATE, "192.0.2.50", arrival=1_700_000_000.0)
    collector.feed(EXPORTS[name], "192.0.2.9", arrival=1_700_000_000.0)
    collector.feed(GOOD_DATA, "192.0.2.50", arrival=1_700_000_000.0)
    collector.feed(GOOD_TEMPLATE, "192.0.2.51", arrival=1_700_000_000.0)
    collector.feed(EXPORTS[name], "192.0.2.51", arrival=1_700_000_000.0)  # the liar is also a good exporter
    collector.feed(GOOD_DATA, "192.0.2.51", arrival=1_700_000_000.0)
    flows = collector.flush().flows
    good = flows[(flows["sport"] == 40000) & (flows["dport"] == 123)]
    replaced = name.startswith(("ipfix-withdraw", "ipfix-field-count-0"))  # a withdrawal on the second exporter
    assert len(good) >= (1 if replaced else 2), f"{name} stopped other exporters' records: {len(good)} left"
    assert (flows["packets"] >= 0).all() and np.isfinite(flows["packets"]).all(), f"{name} gave impossible counts"
    assert health.snapshot().get("source.netflow.datagrams") == 6, "a datagram went uncounted"


def _sflow_sample(records: list[bytes], count: int | None = None, length: int | None = None, rate: int = 1000,
                  enterprise: int = 0) -> bytes:
    body = struct.pack("!IIIIIIII", 1, 3, rate, 5000, 0, 1, 2, len(records) if count is None else count) + b"".join(records)
    return struct.pack("!II", (enterprise << 12) | 1, len(body) if length is None else length) + body


def _raw_header(frame: bytes, protocol: int = 1, header_length: int | None = None,
                record: tuple[int, int] | None = None) -> bytes:
    body = struct.pack("!IIII", protocol, len(frame), 0, len(frame) if header_length is None else header_length)
    body += frame + bytes(-len(frame) % 4)
    kind, length = record or (1, len(body))
    return struct.pack("!II", kind, length) + body


def _sflow(samples: list[bytes], count: int | None = None, address_type: int = 1, version: int = 5) -> bytes:
    address = bytes([192, 0, 2, 9]) if address_type == 1 else bytes(16)
    return (struct.pack("!II", version, address_type) + address
            + struct.pack("!IIII", 0, 11, 100_000, len(samples) if count is None else count) + b"".join(samples))


FRAME = seeds.frames_by_linktype()[1][0]
SFLOW = {
    "sample-count-4G": _sflow([_sflow_sample([_raw_header(FRAME)])], count=0xFFFFFFFF),
    "sample-count-0-with-a-sample": _sflow([_sflow_sample([_raw_header(FRAME)])], count=0),
    "sample-length-0": _sflow([_sflow_sample([_raw_header(FRAME)], length=0)]),
    "sample-length-4G": _sflow([_sflow_sample([_raw_header(FRAME)], length=0xFFFFFFF0)]),
    "record-count-4G": _sflow([_sflow_sample([_raw_header(FRAME)], count=0xFFFFFFFF)]),
    "record-length-4G": _sflow([_sflow_sample([_raw_header(FRAME, record=(1, 0xFFFFFFF0))])]),
    "record-length-0": _sflow([_sflow_sample([_raw_header(FRAME, record=(1, 0))])]),
    "header-longer-than-record": _sflow([_sflow_sample([_raw_header(FRAME, header_length=5000)])]),
    "header-protocol-99": _sflow([_sflow_sample([_raw_header(FRAME, protocol=99)])]),
    "sampling-rate-0": _sflow([_sflow_sample([_raw_header(FRAME)], rate=0)]),
    "sampling-rate-4G": _sflow([_sflow_sample([_raw_header(FRAME)], rate=0xFFFFFFFF)]),
    "enterprise-sample": _sflow([_sflow_sample([_raw_header(FRAME)], enterprise=4413)]),
    "agent-address-type-7": _sflow([_sflow_sample([_raw_header(FRAME)])], address_type=7),
    "version-4": _sflow([_sflow_sample([_raw_header(FRAME)])], version=4),
    "2000-records": _sflow([_sflow_sample([_raw_header(FRAME)] * 2000)]),
}


@pytest.mark.parametrize("name", sorted(SFLOW))
def test_hostile_sflow_datagram_is_skipped_or_decoded_and_the_next_one_still_counts(name: str) -> None:
    health.reset()
    decoder = SflowDecoder()
    good = _sflow([_sflow_sample([_raw_header(FRAME)])])
    decoder.feed(SFLOW[name], 1_700_000_000.0)
    decoder.feed(good, 1_700_000_000.0)
    decoded = decoder.flush()
    assert decoded.frames is not None and len(decoded.frames) >= 1, f"the good datagram after {name} was lost"
    assert np.isfinite(decoded.frames.weight).all() and (decoded.frames.weight >= 0).all(), \
        f"{name} gave an impossible sampling weight"


# --- hand-edited configs ------------------------------------------------------------------

MINI = '[campus]\ninternal = ["10.20.0.0/16"]\n'
CONFIGS = {
    "empty": "",
    "not-toml": "this is not = = toml",
    "duplicate-table": MINI + "[campus]\ninternal = []\n",
    "interval-0": MINI + "[aggregate]\ninterval = 0\n",
    "interval-nan": MINI + "[aggregate]\ninterval = nan\n",
    "interval-inf": MINI + "[aggregate]\ninterval = inf\n",
    "interval-text": MINI + '[aggregate]\ninterval = "60s"\n',
    "interval-date": MINI + "[aggregate]\ninterval = 2026-01-01T00:00:00Z\n",
    "interval-2^63": MINI + "[aggregate]\ninterval = 9223372036854775807\n",
    "internal-a-string": '[campus]\ninternal = "10.0.0.0/8"\n',
    "internal-bad-prefix": '[campus]\ninternal = ["10.0.0.0/33"]\n',
    "internal-a-number": "[campus]\ninternal = [167772160]\n",
    "campus-an-array": '[[campus]]\ninternal = ["10.0.0.0/8"]\n',
    "sources-a-table": MINI + '[sources]\ntype = "pcap"\n',
    "source-without-type": MINI + '[[sources]]\ninterface = "eth0"\n',
    "sink-type-a-number": MINI + "[[sinks]]\ntype = 5\n",
    "store-path-nul": MINI + '[[sinks]]\ntype = "store"\npath = "a\\u0000b"\n',
    "store-path-too-long": MINI + '[[sinks]]\ntype = "store"\npath = "' + "a" * 5000 + '"\n',
    "checkpoint-nul": MINI + '[detect]\ncheckpoint = "a\\u0000b"\n',
    "detector-unknown": MINI + '[detect]\ndetectors = ["rules", "nope"]\n',
    "nested-500-deep": MINI + "x = " + "[" * 500 + "]" * 500 + "\n",
    "max-window-rows-negative": MINI + "[aggregate]\nmax_window_rows = -1\n",
    "hook-argv-a-string": MINI + '[[sinks]]\ntype = "alerts"\n[[sinks.hooks]]\nkind = "command"\nargv = "rm -rf /"\n',
    "silence-expires-inf": MINI + '[[sinks]]\ntype = "alerts"\n[[sinks.silences]]\nhost = "10.0.0.1"\nreason = "x"\nexpires = inf\n',
    "muzzle-nan": MINI + '[[sinks]]\ntype = "alerts"\n[sinks.muzzle]\nwidest_v4 = 0\nrate = -5\nduration = nan\n',
    "netflow-listen-a-string": MINI + '[[sources]]\ntype = "netflow"\nlisten = "127.0.0.1:2055"\n',
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hand_edited_config_gives_a_clear_error_in_every_command(tmp_path: Path, name: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETMON_DATA_DIR", str(tmp_path / "data"))
    config = tmp_path / "netmon.toml"
    config.write_text(CONFIGS[name], encoding="utf-8")
    capture = tmp_path / "c.pcap"
    capture.write_bytes(SEED)
    commands = {
        "check-config": ["check-config", str(config)],
        "replay": ["replay", str(capture), "--config", str(config), "--db", str(tmp_path / "n.db")],
        "hosts": ["hosts", "--config", str(config)],
        "silence list": ["silence", "list", "--config", str(config)],
        "muzzle list": ["muzzle", "list", "--config", str(config)],
    }
    for what, argv in commands.items():
        result = CliRunner().invoke(main, argv)
        _no_traceback(result, f"netmon {what} with the {name} config")
        if result.exit_code:
            assert result.output.strip(), f"netmon {what} failed on {name} without saying why"
    assert CliRunner().invoke(main, commands["check-config"]).exit_code in (0, 2)


# --- checkpoints: a path that is not a file, a state edited by hand -----------------------

def _non_files(tmp_path: Path) -> dict[str, Path]:
    directory = tmp_path / "models"
    directory.mkdir()
    (directory / "precious").write_text("other files")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = {"directory": directory, "fifo": fifo}
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's twin
        out["device"] = tmp_path / "null"
    except PermissionError:
        pass  # not root: the directory and the FIFO still pin it
    return out


def test_checkpoint_path_that_is_not_a_file_is_never_opened_moved_or_replaced(tmp_path: Path) -> None:
    case = CASES / "checkpoint-path-not-a-file"
    for kind, path in _non_files(tmp_path).items():
        before = path.lstat()
        config = tmp_path / f"{kind}.toml"
        config.write_text((case / "netmon.toml").read_text().replace("CHECKPOINT", str(path)))
        capture = tmp_path / "c.pcap"
        capture.write_bytes(SEED)
        health.reset()
        result = CliRunner().invoke(main, ["replay", str(capture), "--config", str(config), "--db", str(tmp_path / "n.db")])
        _no_traceback(result, f"replay with a checkpoint that is a {kind}")
        assert result.exit_code == 0 and "scored" in result.output, result.output
        after = path.lstat()
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode), f"the {kind} was moved or replaced"
        assert not list(tmp_path.glob(f"{path.name}.corrupt-*")), f"the {kind} was set aside as a corrupt checkpoint"
        assert health.snapshot().get("detect.checkpoint.not_a_file") == 1, "the refusal went uncounted"
        checked = CliRunner().invoke(main, ["check-config", str(config)])
        assert checked.exit_code == 2 and f"detect.checkpoint {path}: is" in checked.output, checked.output
    assert (tmp_path / "models" / "precious").read_text() == "other files"


def _engine(path: Path) -> Engine:
    return Engine(Detect.model_validate({"checkpoint": str(path)}))


def test_checkpoint_edited_by_hand_starts_that_detector_cold(tmp_path: Path) -> None:
    case = CASES / "checkpoint-hand-edited-hosts-scalar"
    expected = json.loads((case / "expected.json").read_text())
    path = tmp_path / "state.ckpt"
    path.write_bytes((case / "state.ckpt").read_bytes())
    engine = _engine(path)
    assert path.exists(), "a checksummed checkpoint with one unusable detector must not be set aside"
    for name, rows in expected["hosts_after_load"].items():
        restored = len(engine.detectors[name].state()["hosts"])
        assert restored == rows, f"{name}: {restored} hosts restored, expected {rows}"


def _leaves(tree: dict, path: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key), value


def test_any_single_state_entry_edited_by_hand_never_stops_a_replay(tmp_path: Path) -> None:
    """Each detector's state entries (of the shipped case) replaced by a wrong kind of value,
    a short or empty array, or deleted, and the file checksummed again, as a hand editor with
    the format's documentation would: the replay runs, the detector at worst starts cold."""
    source = checkpoint.load(CASES / "checkpoint-hand-edited-hosts-scalar" / "state.ckpt")
    rnd = random.Random(11)
    capture = tmp_path / "c.pcap"
    capture.write_bytes(SEED)
    leaves = list(_leaves(source))
    for path, value in rnd.sample(leaves, min(10, len(leaves))):
        for replacement in (None, "x", -1, value[:2] if isinstance(value, np.ndarray) and value.ndim else 10**12):
            edited = copy.deepcopy(source)
            node = edited
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = replacement
            state = tmp_path / "edited.ckpt"
            checkpoint.save(state, edited)
            result = CliRunner().invoke(main, ["replay", str(capture), *INTERNAL, "--state", str(state),
                                               "--db", str(tmp_path / "n.db")])
            _no_traceback(result, f"replay with {'.'.join(path)} = {replacement!r:.40}")
            assert result.exit_code == 0, f"{'.'.join(path)} = {replacement!r:.40}: {result.output}"


@pytest.mark.parametrize("name", ["a-list.json", "open-entry-a-string.json", "key-without-rule.json"])
def test_alerts_state_file_edited_by_hand_starts_without_open_alerts(tmp_path: Path, name: str) -> None:
    state = tmp_path / "alerts-state.json"
    state.write_bytes((CASES / "alerts-state-hand-edited" / name).read_bytes())
    config = tmp_path / "netmon.toml"
    config.write_text(f'{MINI}[[sinks]]\ntype = "alerts"\nstate_file = "{state}"\nsilences_file = "{tmp_path / "s.json"}"\n')
    capture = tmp_path / "c.pcap"
    capture.write_bytes(SEED)
    health.reset()
    result = CliRunner().invoke(main, ["replay", str(capture), "--config", str(config), "--db", str(tmp_path / "n.db")])
    _no_traceback(result, f"replay with the {name} alert state")
    assert result.exit_code == 0, f"the alerts sink did not start on {name}: {result.output}"
    assert health.snapshot().get("alerts.state.unreadable") == 1, "the unusable state file went uncounted"


@pytest.mark.parametrize("name", ["cursor-negative", "cursor-mid-record", "cursor-ahead-of-every-segment", "old.seg",
                                  "99.seg"])
def test_spool_edited_by_hand_still_sends_every_point(tmp_path: Path, name: str) -> None:
    spool = Spool(tmp_path / "spool", 1 << 30, segment_bytes=2000)
    for index in range(60):
        spool.append([f"ntp_host,host=10.20.0.{index} servers={index}i {index}".encode()] * 3)
    spool.sync()
    spool.close()
    edited = CASES / "spool-hand-edited" / name
    (tmp_path / "spool" / ("cursor" if name.startswith("cursor") else name)).write_bytes(edited.read_bytes())
    health.reset()
    again = Spool(tmp_path / "spool", 1 << 30, segment_bytes=2000)
    sent = 0
    while records := again.read(50):
        sent += sum(len(r.lines) for r in records)
        again.commit(records)
    again.close()
    assert sent == 180, f"{name}: {sent} of 180 points sent"
    if name.startswith("cursor"):
        assert health.snapshot().get("influx.spool.cursor_reset") == 1, "the unusable cursor went uncounted"
