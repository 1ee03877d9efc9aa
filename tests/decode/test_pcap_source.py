"""The "pcap" source plug-in: config validation, files in order, a damaged file does not stop a replay."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from pydantic import ValidationError

from netmon import health
from netmon.config import validate
from netmon.sources import pcap
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
