"""The "pcap" source plug-in: config validation, files in order, a damaged file does not stop a replay."""

from __future__ import annotations

import gzip
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from netmon import health
from netmon.batch import Frames
from netmon.config import validate
from netmon.decode import packets
from netmon.decode.frames import decode_frames
from netmon.sources import pcap, pcapfile
from tests.decode import builders

PACKETS = [builders.link_header(1, p) + p for p in builders.ip_packets(builders.rows(4))]


def test_config_names_a_missing_file() -> None:
    with pytest.raises(ValidationError, match="no such capture file: nowhere.pcap"):
        pcap.Config(paths=["nowhere.pcap"])


def test_the_source_validates_inside_the_whole_config(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    path.write_bytes(builders.pcap_bytes(PACKETS))
    settings = validate({"sources": [{"type": "pcap", "paths": [str(path)], "progress": False}]})
    assert settings.sources[0].paths == [str(path)]


def test_files_are_read_in_order_and_a_damaged_one_is_reported_not_fatal(tmp_path: Path) -> None:
    good, cut, also = tmp_path / "1.pcap", tmp_path / "2.pcapng", tmp_path / "3.pcap.gz"
    good.write_bytes(builders.pcap_bytes(PACKETS[:2]))
    cut.write_bytes(builders.pcapng_bytes(PACKETS)[:-7])
    also.write_bytes(gzip.compress(builders.pcap_bytes(PACKETS[3:])))
    source = pcap.build(pcap.Config(paths=[str(good), str(cut), str(also)], progress=True))
    counts = [len(frames) for frames in source.batches()]
    source.close()
    assert counts == [2, 3, 1], "the cut file keeps its first three frames"
    assert len(source.errors) == 1 and source.errors[0].path == str(cut)
    assert health.snapshot()["source.pcap.corrupt"] == 1


def test_a_replayed_batch_is_parsed_once_the_export_router_s_parse_goes_to_the_ntp_decoder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The router reads each batch just before the decoder (up to a queue's length before it when
    the source runs in a thread); parsing link and IP layers twice cost a replay ~0.2 s per million frames."""
    path = tmp_path / "a.pcap"
    path.write_bytes(builders.pcap_bytes(PACKETS * 6))
    monkeypatch.setattr(pcapfile, "READ_BYTES", 4 * len(PACKETS[0]))  # a batch of a few frames
    parses = []
    parse = packets._network
    monkeypatch.setattr(packets, "_network", lambda *a: parses.append(1) or parse(*a))
    monkeypatch.setattr(packets, "_shared", OrderedDict())
    source = pcap.build(pcap.Config(paths=[str(path)], progress=False))
    batches = [item for item in source.batches() if isinstance(item, Frames)]
    assert 4 < len(batches) <= packets.SHARED_BATCHES, "the test wants several batches, all routed ahead"
    assert len(parses) == len(batches), "the export router parses each batch"
    rows = np.concatenate([decode_frames(frames) for frames in batches])
    assert len(parses) == len(batches), "the NTP decoder parsed again what the router had parsed"
    assert len(rows) == len(PACKETS) * 6
    assert not packets._shared, "a batch the decoder has read is still held"


def test_only_the_export_router_leaves_its_parse_for_the_ntp_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers whose batches the NTP decoder never reads (a flow listener, ``--flows`` listings,
    sampled headers) must not fill the shared store with parses nobody takes."""
    from netmon.sources.netflow.datagrams import udp_datagrams
    from netmon.sources.netflow.records import frames_from

    monkeypatch.setattr(packets, "_shared", OrderedDict())
    frames = frames_from([(PACKETS, np.array([len(p) for p in PACKETS]), 0.0, 1.0)])
    list(udp_datagrams(frames))
    packets.ip_packets(frames)
    packets.udp_packets(frames, None)
    assert not packets._shared, "a reader that is not the export router left its parse behind"
    list(udp_datagrams(frames, share=True))
    assert len(packets._shared) == 1, "the export router's parse must wait for the NTP decoder"
    decode_frames(frames)
    assert not packets._shared, "the NTP decoder must take the router's parse"
