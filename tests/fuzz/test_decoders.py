"""Bounded fuzzing of every decoder and the capture reader (runs in CI, a few seconds each).

Each test mangles valid inputs (tests.fuzz.seeds): cuts them short, overwrites bytes,
rewrites 16- and 32-bit fields with edge values, splices random bytes in. The bar
(DESIGN "Bars"): a decoder never raises, it decodes or counts a skip; the capture
reader raises nothing but :class:`CaptureError` (a clear error naming the offset),
after the frames before the fault. Runs are derandomized, so CI is repeatable;
``NETMON_FUZZ_EXAMPLES`` raises the number of examples for a longer local run.
"""

from __future__ import annotations

import os
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netmon import health
from netmon.decode.frames import decode_frames
from netmon.sources.netflow.collector import Collector
from netmon.sources.pcapfile import CaptureError, read_frames
from netmon.sources.sflow import SflowDecoder
from tests.decode import builders
from tests.fuzz import seeds

EXAMPLES = int(os.environ.get("NETMON_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FRAMES = seeds.frames_by_linktype()
EDGES_16 = [0, 1, 3, 4, 7, 8, 255, 256, 0x7FFF, 0x8000, 0xFFFF]
EDGES_32 = [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@st.composite
def mangled(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` cut, overwritten, with fields set to edge values or random bytes spliced in."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["cut", "byte", "u16", "u32", "splice", "zero"]))
        if kind == "cut":
            del data[at:]
        elif kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "u16" and at + 2 <= len(data):
            data[at:at + 2] = struct.pack("!H", draw(st.sampled_from(EDGES_16)))
        elif kind == "u32" and at + 4 <= len(data):
            data[at:at + 4] = struct.pack("!I", draw(st.sampled_from(EDGES_32)))
        elif kind == "splice":
            data[at:at] = draw(st.binary(max_size=64))
        elif kind == "zero":
            data[at:at + 8] = bytes(min(8, len(data) - at))
    return bytes(data)


def one_of_seeds(pool: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.sampled_from(pool).flatmap(lambda seed: mangled(seed))


@FUZZ
@given(st.sampled_from(sorted(FRAMES)).flatmap(
    lambda kind: st.tuples(st.just(kind), st.lists(one_of_seeds(FRAMES[kind]) | st.binary(max_size=96), min_size=1,
                                                   max_size=16))))
def test_mangled_frames_of_every_link_type_decode_or_are_skipped(case: tuple[int, list[bytes]]) -> None:
    linktype, frames = case
    health.reset()
    rows = decode_frames(builders.frames(frames, linktype=linktype))
    assert len(rows) <= len(frames), "more observations than frames"
    assert health.snapshot().get("decode.frames") == len(frames), "frames went uncounted"
    if len(rows):
        assert (rows["mode"] <= 7).all() and (rows["version"] <= 7).all() and (rows["leap"] <= 3).all()


def _ntp_mangled(draw: st.DrawFn) -> bytes:
    """An Ethernet/IPv4/UDP/123 frame whose NTP header (and UDP length) is mangled."""
    frame = draw(st.sampled_from(FRAMES[1][:4]))
    head, payload = frame[:42], frame[42:]
    udp_length = draw(st.sampled_from([None, *EDGES_16]))
    if udp_length is not None:
        head = head[:38] + struct.pack("!H", udp_length) + head[40:]
    return head + draw(mangled(payload) | st.binary(max_size=120))


@FUZZ
@given(st.lists(st.composite(lambda draw: _ntp_mangled(draw))(), min_size=1, max_size=16))
def test_mangled_ntp_headers_decode_to_fields_in_range_or_are_skipped(frames: list[bytes]) -> None:
    rows = decode_frames(builders.frames(frames, linktype=1))
    assert len(rows) <= len(frames)
    if len(rows):
        assert (rows["mode"] <= 7).all() and (rows["leap"] <= 3).all() and (rows["ntp_len"] >= 0).all()


@FUZZ
@given(st.lists(one_of_seeds(seeds.netflow_exports()) | st.binary(max_size=200), min_size=1, max_size=20))
def test_mangled_netflow_v5_v9_ipfix_exports_never_raise(batch: list[bytes]) -> None:
    """One by one (``feed``) and as the listener hands them over (``feed_batch``, views into
    one receive buffer): never an exception, every datagram counted, the same records."""
    health.reset()
    collector = Collector(max_templates=32, max_pending=8)
    for data in batch:
        collector.feed(data, "192.0.2.9")
    decoded = collector.flush()
    assert (decoded.flows["packets"] >= 0).all() and len(collector.templates) <= 32
    assert health.snapshot().get("source.netflow.datagrams") == len(batch), "datagrams went uncounted"
    health.reset()
    block, views, at = memoryview(b"".join(batch)), [], 0
    for data in batch:
        views.append(block[at:at + len(data)])
        at += len(data)
    batched = Collector(max_templates=32, max_pending=8)
    batched.feed_batch(views, ["192.0.2.9"] * len(views))
    assert sorted(batched.flush().flows.tolist()) == sorted(decoded.flows.tolist()), \
        "a batch decoded other records than one by one (v5 ones come after the batch's others: order aside)"
    assert health.snapshot().get("source.netflow.datagrams") == len(batch), "a batch's datagrams went uncounted"


@FUZZ
@given(st.lists(one_of_seeds([seeds.sflow_datagram()]) | st.binary(max_size=200), min_size=1, max_size=20))
def test_mangled_sflow_datagrams_never_raise(batch: list[bytes]) -> None:
    health.reset()
    decoder = SflowDecoder()
    for data in batch:
        decoder.feed(data, 1_700_000_000.0)
    decoded = decoder.flush()
    assert (decoded.flows["packets"] >= 0).all()
    assert health.snapshot().get("source.sflow.datagrams") == len(batch), "datagrams went uncounted"
    if decoded.frames is not None:
        decode_frames(decoded.frames)


@FUZZ
@given(one_of_seeds(seeds.capture_files()))
def test_mangled_capture_files_give_frames_or_a_capture_error_only(tmp_path, content: bytes) -> None:
    path = tmp_path / "fuzzed.cap"
    path.write_bytes(content)
    frames = 0
    try:
        for chunk in read_frames(path):
            frames += len(chunk)
            assert np.all(chunk.offset + chunk.caplen <= len(chunk.data)), "a frame points past its buffer"
            decode_frames(chunk)
    except CaptureError as exc:
        assert exc.offset >= 0 and str(exc.offset) in str(exc)
