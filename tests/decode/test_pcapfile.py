"""Capture files: every container variant reads back the same frames; damage is an error with an offset."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmon import health
from netmon.decode.frames import decode_frames
from netmon.decode.encode import frames_from_observations
from netmon.sources import pcapfile
from netmon.sources.pcapfile import CaptureError, read_frames, write_pcap
from tests.decode import builders

PACKETS = [builders.link_header(1, p) + p for p in builders.ip_packets(builders.rows(5))]
TIMES = [builders.T0 + i * 1.000123 for i in range(5)]


def _read_all(path: Path) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    packets, times, linktypes = [], [], []
    for frames in read_frames(path):
        for i in range(len(frames)):
            packets.append(bytes(frames.data[frames.offset[i]:frames.offset[i] + frames.caplen[i]]))
        times.append(frames.time)
        linktypes.append(frames.linktype)
    return packets, np.concatenate(times), np.concatenate(linktypes)


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_in_either_byte_order_and_resolution_reads_back_the_same_frames(tmp_path: Path, endian: str, nanosecond: bool) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(builders.pcap_bytes(PACKETS, endian=endian, nanosecond=nanosecond, times=TIMES))
    packets, times, linktypes = _read_all(path)
    assert packets == PACKETS
    assert times == pytest.approx(TIMES, abs=1e-6)
    assert set(linktypes.tolist()) == {1}


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("block", ["epb", "spb", "opb"])
def test_pcapng_blocks_in_either_byte_order_read_back_the_same_frames(tmp_path: Path, endian: str, block: str) -> None:
    path = tmp_path / "x.pcapng"
    path.write_bytes(builders.pcapng_bytes(PACKETS, endian=endian, block=block, times=TIMES))
    packets, times, _ = _read_all(path)
    assert packets == PACKETS
    if block != "spb":  # simple packet blocks carry no time
        assert times == pytest.approx(TIMES, abs=1e-6)


@pytest.mark.parametrize("tsresol", [9, 0x80 | 20, 3])
def test_pcapng_interface_time_resolution_and_offset_are_honoured(tmp_path: Path, tsresol: int) -> None:
    path = tmp_path / "x.pcapng"
    path.write_bytes(builders.pcapng_bytes(PACKETS, tsresol=tsresol, tsoffset=1_000_000, times=TIMES))
    _, times, _ = _read_all(path)
    units = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10 ** tsresol
    assert times == pytest.approx(TIMES, abs=1.0 / units + 1e-6)


def test_pcapng_with_two_sections_of_different_byte_order_reads_both(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    path.write_bytes(builders.pcapng_bytes(PACKETS[:2], endian="<") + builders.pcapng_bytes(PACKETS[2:], endian=">", linktype=1))
    packets, _, _ = _read_all(path)
    assert packets == PACKETS


@pytest.mark.parametrize("name", ["capture.pcap", "capture.bin"])
def test_gzip_is_recognised_by_its_magic_whatever_the_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(builders.pcapng_bytes(PACKETS)))
    assert _read_all(path)[0] == PACKETS


def test_many_read_chunks_lose_and_repeat_no_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcapfile, "READ_BYTES", 97)  # forces records and blocks to straddle reads
    packets = [builders.link_header(1, p) + p for p in builders.ip_packets(builders.rows(200))]
    for name, content in (("a.pcap", builders.pcap_bytes(packets)), ("a.pcapng", builders.pcapng_bytes(packets))):
        path = tmp_path / name
        path.write_bytes(content)
        assert _read_all(path)[0] == packets, name


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_cut_file_yields_every_whole_frame_then_an_error_naming_the_offset(tmp_path: Path, kind: str) -> None:
    content = builders.pcap_bytes(PACKETS) if kind == "pcap" else builders.pcapng_bytes(PACKETS)
    cut = len(content) - 10
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(content[:cut])
    got = []
    with pytest.raises(CaptureError) as error:
        for frames in read_frames(path):
            got.extend(bytes(frames.data[o:o + c]) for o, c in zip(frames.offset, frames.caplen))
    assert got == PACKETS[:-1], "every frame before the cut must be delivered"
    last_record = len(content) - (16 + len(PACKETS[-1]) if kind == "pcap" else 32 + len(PACKETS[-1]) + (-len(PACKETS[-1]) % 4))
    assert error.value.offset == last_record
    assert f"byte offset {last_record}" in str(error.value)
    assert health.snapshot()["source.pcap.corrupt"] == 1


def test_a_record_with_an_impossible_length_is_an_error_at_that_record(tmp_path: Path) -> None:
    content = bytearray(builders.pcap_bytes(PACKETS))
    third = 24 + 2 * (16 + len(PACKETS[0]))
    content[third + 8:third + 12] = (0x7FFFFFFF).to_bytes(4, "little")
    path = tmp_path / "bad.pcap"
    path.write_bytes(bytes(content))
    got = 0
    with pytest.raises(CaptureError, match=f"offset {third}") as error:
        for frames in read_frames(path):
            got += len(frames)
    assert got == 2
    assert "corrupt" in error.value.reason


def test_a_corrupt_pcapng_block_length_is_an_error_at_that_block(tmp_path: Path) -> None:
    content = bytearray(builders.pcapng_bytes(PACKETS))
    first_packet = content.index((6).to_bytes(4, "little"), 28)
    content[first_packet + 4:first_packet + 8] = (13).to_bytes(4, "little")
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(content))
    with pytest.raises(CaptureError, match=f"offset {first_packet}"):
        list(read_frames(path))


@pytest.mark.parametrize("content", [b"", b"hello world, not a capture", b"\x1f\x8b garbage"])
def test_a_file_that_is_not_a_capture_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match="offset 0"):
        list(read_frames(path))


@pytest.mark.parametrize("nanosecond", [False, True])
def test_write_pcap_round_trips_frames_and_times(tmp_path: Path, nanosecond: bool) -> None:
    observations = builders.rows(300, vlan=np.arange(300) % 3)
    observations["time"] = builders.T0 + np.arange(300) * 0.001001
    frames = frames_from_observations(observations)
    path = tmp_path / ("x.pcap.gz" if nanosecond else "x.pcap")
    write_pcap(path, frames, nanosecond=nanosecond)
    packets, times, _ = _read_all(path)
    assert packets == [bytes(frames.data[o:o + c]) for o, c in zip(frames.offset, frames.caplen)]
    assert times == pytest.approx(observations["time"], abs=1e-6)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_written_frames_with_valid_checksums(tmp_path: Path) -> None:
    observations = np.concatenate([
        builders.rows(3, vlan=[0, 7, 0]), builders.rows(2, src="2001:db8::1", dst="2001:db8::2", mac_len=20, num_exts=1),
        builders.rows(2, sport=443, dport=50000, ntp_len=333),
    ])
    path = tmp_path / "x.pcap"
    write_pcap(path, frames_from_observations(observations, protocol=np.array([17] * 6 + [6])))
    out = subprocess.run(
        ["tshark", "-r", str(path), "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
         "-o", "tcp.check_checksum:TRUE", "-T", "fields", "-e", "ip.checksum.status", "-e", "udp.checksum.status",
         "-e", "tcp.checksum.status", "-e", "ntp.flags.mode"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    lines = [line.split("\t") for line in out if line]
    assert len(lines) == 7
    for ip_status, udp_status, tcp_status, mode in lines[:5]:
        assert ip_status in ("", "1") and udp_status == "1" and mode == "3", lines  # 1 = good, 0 = bad
    assert lines[5][1] == "1" and lines[5][3] == "", "UDP background: good checksum, not NTP"
    assert lines[6][0] == "1" and lines[6][2] == "1", "TCP background: good IP and TCP checksums"


def test_a_cut_gzip_file_keeps_every_frame_that_decompressed_before_the_cut(tmp_path: Path) -> None:
    packets = [builders.link_header(1, p) + p for p in builders.ip_packets(builders.rows(2000))]
    content = gzip.compress(builders.pcap_bytes(packets))
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(content[: len(content) * 3 // 4])
    got = 0
    with pytest.raises(CaptureError, match="compressed stream is damaged|cut capture"):
        for frames in read_frames(path):
            got += len(frames)
    assert got > 1000, f"only {got} of ~1500 frames before the cut were kept"


def test_pcapng_interfaces_keep_their_own_link_type_and_a_bad_interface_id_is_an_error(tmp_path: Path) -> None:
    ip = builders.ip_packets(builders.rows(1))[0]
    ether = builders.link_header(1, ip) + ip

    def epb(interface: int, packet: bytes) -> bytes:
        return builders.pcapng_block("<", 6, struct.pack("<IIIII", interface, 0, 1_000_000, len(packet), len(packet)) + packet)

    head = builders.pcapng_bytes([], linktype=1) + builders.pcapng_block("<", 1, struct.pack("<HHI", 101, 0, 0))
    path = tmp_path / "two.pcapng"
    path.write_bytes(head + epb(0, ether) + epb(1, ip))
    rows = [decode_frames(frames) for frames in read_frames(path)]
    assert [len(r) for r in rows] == [2]
    assert [int(t) for frames in read_frames(path) for t in frames.linktype] == [1, 101]
    path.write_bytes(head + epb(0, ether) + epb(7, ip))
    with pytest.raises(CaptureError, match="interface"):
        list(read_frames(path))


def test_damaged_gzip_gives_a_clear_error_with_offset_after_the_earlier_frames() -> None:
    case = Path(__file__).resolve().parents[1] / "cases" / "gzip-damaged-mid-stream"
    expected = json.loads((case / "expected.json").read_text())
    got = 0
    with pytest.raises(CaptureError) as caught:
        for frames in read_frames(case / "capture.pcap.gz"):
            got += len(frames)
    assert got == expected["frames"], f"{got} frames delivered before the damage, expected {expected['frames']}"
    assert caught.value.offset == expected["offset"]
    assert expected["error"] in str(caught.value) and expected["zlib"] in str(caught.value), str(caught.value)
    done = subprocess.run([str(Path(sys.executable).with_name("netmon")), "replay", "--internal", "10.0.0.0/8", str(case / "capture.pcap.gz")],
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "compressed stream is damaged" in output, output


def _positions_from_both_walks(buf: bytes, start: int, big_endian: bool) -> tuple[list[int], list[int]]:
    assert pcapfile._compiled_walk is not None, \
        "the compiled pcap walk is not built: install a C compiler and Python headers, then reinstall (deploy/install.sh)"
    compiled = pcapfile._walk_pcap(buf, start, big_endian).tolist()
    return compiled, pcapfile._walk_pcap_python(buf, start, big_endian).tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=12), st.binary(max_size=40), st.integers(0, 40), st.booleans())
def test_the_compiled_and_the_python_pcap_walk_list_the_same_record_positions(
        records: list[bytes], tail: bytes, start: int, big_endian: bool) -> None:
    """Whole records, then garbage (a cut record, a corrupt length), from any start."""
    order = ">" if big_endian else "<"
    buf = b"".join(struct.pack(order + "IIII", 0, 0, len(r), len(r)) + r for r in records) + tail
    compiled, python = _positions_from_both_walks(buf, start, big_endian)
    assert compiled == python, f"compiled walk {compiled} != python walk {python}"


def test_the_compiled_walk_lists_every_record_of_a_chunk_of_header_only_records() -> None:
    """20,000 records with no data (16 bytes each): far more than the compiled walk's first
    guess of one record per 256 bytes, so its list grows; nothing is lost or repeated."""
    buf = struct.pack("<IIII", 0, 0, 0, 60) * 20_000 + b"\x01\x02"
    compiled, python = _positions_from_both_walks(buf, 0, False)
    assert compiled == python == list(range(0, 16 * 20_001, 16)), "the grown list lost or repeated positions"


@pytest.mark.parametrize("corrupt", [False, True])
def test_a_capture_reads_back_the_same_frames_with_either_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              corrupt: bool) -> None:
    path = tmp_path / "x.pcap"
    data = builders.pcap_bytes(PACKETS * 40)
    if corrupt:  # a record's captured length says 4 GB: an error at that record, frames before it kept
        at = 24 + 7 * (16 + len(PACKETS[0]))
        data = data[:at + 8] + struct.pack("<I", 0xFFFF_FFF0) + data[at + 12:]
    path.write_bytes(data)
    monkeypatch.setattr(pcapfile, "READ_BYTES", 3000)  # many chunks, records cut at chunk ends

    def read() -> tuple[list[tuple], str]:
        out, error = [], ""
        try:
            for f in read_frames(path):
                out.append(tuple(np.asarray(getattr(f, name)).tolist() for name in ("offset", "caplen", "wirelen", "time"))
                           + (bytes(f.data),))
        except CaptureError as exc:
            error = str(exc)
        return out, error

    compiled = read()
    monkeypatch.setattr(pcapfile, "_compiled_walk", None)
    assert read() == compiled, "the python walk read other frames (or another error) than the compiled one"
    assert bool(compiled[1]) == corrupt and compiled[0], "the capture was not read as the test meant"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=96), st.lists(st.integers(0, 100), max_size=8), st.integers(1, 8))
def test_gathered_header_words_are_the_words_at_each_position(buf: bytes, at: list[int], words: int) -> None:
    """Every word inside ``buf`` is read as it is, however many of a position's words fit."""
    got = pcapfile._gather_u32(buf, np.asarray(at, dtype=np.int64), words, "<")
    for row, pos in zip(got.tolist(), at):
        for k in range(words):
            if pos + 4 * k + 4 <= len(buf):
                assert row[k] == struct.unpack_from("<I", buf, pos + 4 * k)[0], f"word {k} at {pos}"


def test_bytes_the_reader_did_not_read_are_never_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader fills buffers it does not zero (numpy.empty): poisoned with 0xEE, records that
    straddle reads and a cut last record (plain, pcapng, gzip) give the same frames and the same
    decoded rows as clean buffers, and no batch's bytes reach past what was read."""
    packets = [builders.link_header(1, p) + p for p in builders.ip_packets(builders.rows(200))]
    cases = {"a.pcap": builders.pcap_bytes(packets), "a.pcapng": builders.pcapng_bytes(packets),
             "a.pcap.gz": gzip.compress(builders.pcap_bytes(packets))}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        (tmp_path / f"cut-{name}").write_bytes(content[:-10] if not name.endswith(".gz")
                                               else gzip.compress(builders.pcap_bytes(packets)[:-10]))

    def read(path: Path) -> tuple[list[bytes], list[np.ndarray], str]:
        got, rows, error = [], [], ""
        try:
            content = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            for frames in read_frames(path):
                assert frames.data.tobytes() in content, f"{path.name}: a batch holds bytes that were never read"
                got.extend(bytes(frames.data[o:o + c]) for o, c in zip(frames.offset, frames.caplen))
                rows.append(decode_frames(frames))
        except CaptureError as exc:
            error = str(exc)
        return got, rows, error

    monkeypatch.setattr(pcapfile, "READ_BYTES", 97)  # every record straddles reads
    clean = {path.name: read(path) for path in sorted(tmp_path.iterdir())}
    real_empty = np.empty

    def poisoned(*args, **kwargs) -> np.ndarray:
        out = real_empty(*args, **kwargs)
        if out.dtype == np.uint8:
            out.fill(0xEE)
        return out

    monkeypatch.setattr(np, "empty", poisoned)
    for path in sorted(tmp_path.iterdir()):
        got, rows, error = read(path)
        want_got, want_rows, want_error = clean[path.name]
        assert got == want_got, f"{path.name}: frames differ when unread buffer bytes are garbage"
        assert error == want_error, f"{path.name}: {error!r} instead of {want_error!r}"
        assert len(rows) == len(want_rows) and all(np.array_equal(a, b) for a, b in zip(rows, want_rows)), \
            f"{path.name}: decoded rows differ when unread buffer bytes are garbage"
        cut = path.name.startswith("cut-")
        assert got == (packets[:-1] if cut else packets) and bool(error) == cut, f"{path.name}: {len(got)} frames, {error!r}"
