"""Transport messages and partitions: plain functions, no server needed."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netmon import pipeline
from netmon.aggregate.keys import PrefixSet, hash_key, roll_up
from netmon.batch import OBS_DTYPE, addr_halves
from netmon.cluster.collector import Outbox
from netmon.cluster.scorer import Unit
from netmon.config import ConfigError, validate
from netmon.decode.frames import decode_with_index
from netmon.detect import checkpoint
from netmon.transport import partition, wire

CASES = Path(__file__).resolve().parents[1] / "cases" / "cluster-message-refused"
SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "campus-runaway.pcap.gz"


def rows(pairs: list[tuple[str, str]], start: float = 1000.0) -> np.ndarray:
    out = np.zeros(len(pairs), OBS_DTYPE)
    for i, (src, dst) in enumerate(pairs):
        out["src_hi"][i], out["src_lo"][i] = addr_halves(src)
        out["dst_hi"][i], out["dst_lo"][i] = addr_halves(dst)
        out["time"][i] = start + i
        out["packets"][i] = 1
    return out


def test_a_message_round_trips_rows_and_header_exactly():
    data = rows([("10.0.0.1", "192.0.2.1"), ("192.0.2.1", "10.0.0.1")])
    message = wire.decode(wire.encode(wire.ROWS, "router-a", 42, 990.5, data))
    assert (message.kind, message.collector, message.seq, message.watermark) == (wire.ROWS, "router-a", 42, 990.5)
    assert message.rows.tobytes() == data.tobytes(), "rows must come back bit for bit"
    mark = wire.decode(wire.encode(wire.MARK, "router-a", 43, -math.inf))
    assert mark.kind == wire.MARK and mark.rows.shape == (0,) and mark.watermark == -math.inf


def test_messages_packed_straight_from_a_batch_are_the_bytes_encode_gives():
    data = rows([(f"10.0.0.{i}", "192.0.2.1") for i in range(1, 40)])
    chunks = [np.array([3, 5, 8]), np.array([], dtype=np.int64), np.arange(39)[::-2].copy()]
    packed = wire.pack("router-a", 7, 990.5, data, chunks)
    assert [bytes(m) for m in packed] == [wire.encode(wire.ROWS, "router-a", 7 + i, 990.5, data[chunk])
                                          for i, chunk in enumerate(chunks)], "pack must write what encode writes"
    assert wire.decode(bytes(packed[2])).rows.tobytes() == data[chunks[2]].tobytes()


def by_partition(rows: np.ndarray, internal: PrefixSet, ipv6_bits: int, partitions: int) -> dict[int, np.ndarray]:
    """The rows :func:`partition.route` gives each partition, as a collector's messages carry them."""
    index, spans = partition.route(rows, internal, ipv6_bits, partitions)
    return {part: rows[index[a:b]] for part, (a, b) in spans.items()}


@pytest.mark.parametrize("name", sorted(json.loads((CASES / "expected.json").read_text())))
def test_a_message_that_is_not_ours_is_refused_with_the_reason(name: str):
    why = json.loads((CASES / "expected.json").read_text())[name]
    with pytest.raises(wire.WireError, match=why):
        wire.decode((CASES / name).read_bytes())


def test_a_campus_to_campus_row_goes_to_both_hosts_partitions_and_outside_rows_nowhere():
    internal = PrefixSet(["10.0.0.0/8"])
    hosts = [f"10.0.0.{i}" for i in range(1, 60)]
    parts = partition.of_names(hosts, 16)
    a, b = next((x, y) for x, y in zip(hosts, hosts[1:]) if parts[hosts.index(x)] != parts[hosts.index(y)])
    split = by_partition(rows([(a, b), ("192.0.2.1", "198.51.100.1"), (a, "192.0.2.1")]), internal, 64, 16)
    pa, pb = (int(partition.of_names([h], 16)[0]) for h in (a, b))
    assert sorted(split) == sorted({pa, pb}), "a row goes to the partition of each internal end only"
    assert split[pa].shape[0] == 2 and split[pb].shape[0] == 1


def test_ipv6_hosts_of_one_64_share_a_partition_as_the_aggregator_rolls_them_up():
    internal = PrefixSet(["2001:db8::/32"])
    split = by_partition(rows([("2001:db8:1:2::a", "2001:4860::1"), ("2001:db8:1:2::b", "2001:4860::1")]),
                            internal, 64, 4096)
    assert len(split) == 1, "temporary addresses of one /64 are one host, one partition"
    assert list(split) == partition.of_names(["2001:db8:1:2::/64"], 4096).tolist(), \
        "the scorer's partition of the host name must be the collector's"


def test_the_route_gives_each_partition_exactly_its_rows_in_row_order():
    """The one-pass route (hash, sort) against the plain definition: a row
    belongs to the partition of each internal end, rows keep their order, bytes are unchanged."""
    rng = np.random.default_rng(3)
    internal = PrefixSet(["10.0.0.0/8", "2001:db8::/32"])
    addresses = [f"10.0.{i}.{j}" for i in range(4) for j in range(1, 40)] + \
        [f"2001:db8:{i}::{j}" for i in range(6) for j in range(1, 4)] + ["192.0.2.1", "2001:4860::8", "198.51.100.7"]
    pairs = rng.integers(0, len(addresses), (3000, 2))
    internal_count = len(addresses) - 3
    mixed = rows([(addresses[a], addresses[b]) for a, b in pairs])
    campus = rows([(addresses[a % internal_count], addresses[b]) if i % 2 else (addresses[b], addresses[a % internal_count])
                   for i, (a, b) in enumerate(pairs)])  # an internal end in every row, either way round
    for data in (mixed, campus):
        data["sport"] = rng.integers(0, 65535, data.shape[0])
    for data, partitions in itertools.product((mixed, campus), (1, 7, 64)):
        split = by_partition(data, internal, 64, partitions)
        parts = []
        for hi, lo in ((data["src_hi"], data["src_lo"]), (data["dst_hi"], data["dst_lo"])):
            inside = internal.contains(hi, lo)
            parts.append(np.where(inside, partition.of_addresses(hi, lo, 64, partitions), -1))
        for part in range(partitions):
            mine = data[(parts[0] == part) | (parts[1] == part)]
            if not mine.shape[0]:
                assert part not in split, f"partition {part} of {partitions} holds rows of no host of it"
                continue
            assert split[part].tobytes() == mine.tobytes(), \
                f"partition {part} of {partitions}: not exactly its rows in row order"


def test_a_power_of_two_of_partitions_gives_each_host_the_partition_the_remainder_gives():
    """Partitions are fixed for the life of a stream and computed in every process: the mask
    taken for a power of two must name the very partition the remainder names."""
    rng = np.random.default_rng(5)
    hi = np.concatenate([np.zeros(500, np.uint64), rng.integers(0, 2**63, 500, dtype=np.uint64)])
    lo = np.concatenate([(0xFFFF << 32) + rng.integers(0, 2**32, 500, dtype=np.uint64),
                         rng.integers(0, 2**63, 500, dtype=np.uint64)])
    host_hi, host_lo = roll_up(hi, lo, 64)
    for partitions in (1, 2, 16, 64, 4096):
        expected = (hash_key(host_hi, host_lo) % np.uint64(partitions)).astype(np.int64)
        assert np.array_equal(partition.of_addresses(hi, lo, 64, partitions), expected), \
            f"{partitions} partitions: a host's partition differs from the remainder's"


def test_remembered_host_partitions_are_of_names_and_the_memory_stays_bounded():
    hosts = [f"10.0.{i // 250}.{i % 250}" for i in range(1000)] + ["2001:db8:1:2::/64"]
    owners = partition.Owners(16, limit=500)
    for _ in range(3):
        assert owners(hosts).tolist() == partition.of_names(hosts, 16).tolist(), "a remembered partition differs"
        assert len(owners.known) <= 500 + len(hosts), "the memory must be dropped past its limit"


def test_a_partition_closes_windows_only_when_every_expected_collector_passed_them():
    settings = validate({"campus": {"internal": ["10.0.0.0/8"]}, "detect": {"detectors": ["rules"], "checkpoint": ""},
                         "cluster": {"collectors": ["a", "b"]}})
    unit = Unit(0, settings)
    unit.take(wire.decode(wire.encode(wire.ROWS, "a", 1, -math.inf, rows([("10.0.0.1", "192.0.2.1")]))))
    unit.take(wire.decode(wire.encode(wire.MARK, "a", 2, 5000.0)))
    assert unit.closed() == [], "collector b has not spoken: nothing may close"
    unit.take(wire.decode(wire.encode(wire.MARK, "b", 1, 1100.0)))
    assert [iv.start for iv in unit.closed()] == [960.0], "both passed 1020: the window [960, 1020) closes"
    unit.take(wire.decode(wire.encode(wire.END, "b", 2, 1100.0)))
    unit.take(wire.decode(wire.encode(wire.END, "a", 3, 5000.0)))
    assert unit.closed() == [] and unit.aggregator.state()["pending"] == {}, "every collector ended: all closed"


def test_a_single_process_never_imports_the_nats_client():
    probe = ("import sys\nfrom netmon.cli import main\nfor args in (['--help'], ['run', '--help']):\n"
             "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
             "from netmon import pipeline\nfrom netmon.config import validate\n"
             "pipeline.build(validate({'sinks': []}), restore=False)\n"
             "print([m for m in sys.modules if m == 'nats' or m.startswith('nats.')])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", "a single process imported the NATS client"


def test_a_bad_cluster_url_is_named_without_showing_it():
    with pytest.raises(ConfigError) as error:
        validate({"cluster": {"urls": "nats://netmon:s3cret-pass@10.1.2.3:4222"}})
    assert "cluster.urls" in str(error.value)
    assert "s3cret" not in str(error.value), "a NATS URL's credentials must never be shown"


def test_a_scorer_behind_on_a_backlog_never_takes_a_live_collector_for_dead():
    """Found by the 7-day equality run (tests/benchmarks/equal_cluster.py): a scorer slowed
    down by its backlog spent more than ``dead_collector`` seconds between two of collector
    b's messages that the log had stored seconds apart, closed windows without b, and
    counted b's rows late. Silence is measured on the log's time while messages wait."""
    settings = validate({"campus": {"internal": ["10.0.0.0/8"]}, "detect": {"detectors": ["rules"], "checkpoint": ""},
                         "cluster": {"collectors": ["a", "b"], "dead_collector": 60.0}})
    wall = [1000.0]
    unit = Unit(0, settings, wall=lambda: wall[0])

    def read(collector: str, kind: int, stored: float, mark: float, behind: bool, data=None) -> None:
        unit.stored, unit.behind = stored, behind
        unit.take(wire.decode(wire.encode(kind, collector, 1, mark, data)))

    read("a", wire.MARK, 1000.0, 1200.0, True)
    read("b", wire.MARK, 1001.0, 1100.0, True)
    wall[0] += 600  # the scorer took ten minutes over its backlog
    read("a", wire.MARK, 1005.0, 1300.0, True)
    assert unit.closed() == [] and unit.clock.minimum() == 1100.0, \
        "b spoke 4 s before a in the log: it is not silent, windows must wait for it"
    read("b", wire.ROWS, 1006.0, 1110.0, True, rows([("10.0.0.1", "192.0.2.1")], 1105.0))
    assert unit.aggregator.state()["pending"], "b's rows must land in an open window, not count late"
    read("a", wire.MARK, 1070.0, 1400.0, True)
    assert unit.clock.minimum() == 1400.0, "64 s of the log's time without b: b is silent now"
    read("b", wire.MARK, 1071.0, 1120.0, True)
    assert unit.clock.minimum() == 1120.0, "b spoke again: windows wait for it again"
    wall[0] = 1700.0
    read("a", wire.MARK, 1699.0, 1500.0, False)  # caught up: silence is wall time again
    assert unit.clock.minimum() == 1500.0, "caught up, b silent since the log's 1071 is left out"


def test_a_collector_restarted_after_its_end_is_waited_for_again():
    settings = validate({"campus": {"internal": ["10.0.0.0/8"]}, "detect": {"detectors": ["rules"], "checkpoint": ""},
                         "cluster": {"collectors": ["a", "b"]}})
    unit = Unit(0, settings)
    unit.take(wire.decode(wire.encode(wire.MARK, "a", 1, 1000.0)))
    unit.take(wire.decode(wire.encode(wire.END, "b", 1, 1000.0)))
    unit.take(wire.decode(wire.encode(wire.MARK, "b", 1, 1010.0)))  # b restarted (same node id)
    unit.take(wire.decode(wire.encode(wire.ROWS, "a", 2, 5000.0, rows([("10.0.0.1", "192.0.2.1")], 1100.0))))
    assert unit.closed() == [] and unit.clock.minimum() == 1010.0, "windows must wait for the restarted collector"


def test_a_partition_restored_from_its_checkpoint_goes_on_exactly_as_the_one_that_wrote_it(tmp_path: Path):
    """Open windows, socket memory, detectors and collectors' marks survive the checkpoint
    format: the restored unit closes the same intervals with the same scores."""
    settings = validate({"campus": {"internal": ["10.20.0.0/16"]}, "cluster": {"partitions": 1, "collectors": ["c"]},
                         "detect": {"detectors": ["rules", "hosts", "population", "baseline", "drift"],
                                    "checkpoint": ""}})
    source = pipeline.build_sources(validate({"sources": [{"type": "pcap", "paths": [str(SAMPLE)]}]}))[0].source
    rows = np.concatenate([decode_with_index(item)[0] for item in source.batches() if hasattr(item, "caplen")])
    rows = by_partition(rows, PrefixSet(["10.20.0.0/16"]), 64, 1)[0]
    half = rows.shape[0] // 2
    original = Unit(0, settings)
    def passed(part: np.ndarray) -> float:  # the watermark a collector announces once it sent ``part``
        return float(part["time"].max()) - 60.0

    original.take(wire.decode(wire.encode(wire.ROWS, "c", 1, passed(rows[:half]), rows[:half])))
    assert original.closed(), "the first half should close some windows"
    checkpoint.save(tmp_path / "p0.ckpt", original.state())
    restored = Unit(0, settings)
    restored.load_state(checkpoint.load(tmp_path / "p0.ckpt"))
    outputs = []
    for unit in (original, restored):
        unit.take(wire.decode(wire.encode(wire.ROWS, "c", 2, passed(rows[half:]), rows[half:])))
        unit.take(wire.decode(wire.encode(wire.END, "c", 3, math.inf)))
        scored = [unit.engine.process(iv) for iv in unit.closed()]
        outputs.append([(iv.intervals.start, iv.intervals.host.tolist(),
                         {k: np.nan_to_num(v).tolist() for k, v in iv.intervals.features.items()},
                         {k: np.nan_to_num(v).tolist() for k, v in iv.scores.items()},
                         [f.to_json() for f in iv.findings]) for iv in scored])
    assert outputs[0] and outputs[0] == outputs[1], "the restored partition must continue exactly"


def test_a_collectors_metrics_sinks_carry_the_health_tags_netmon_run_gives_them(tmp_path: Path):
    """A collector runs only the config's metrics sinks; their tags (health labels) must be those
    one `netmon run` of the same config gives them, numbered over every sink, not over the kept ones."""
    from tests.support.nats import free_port

    settings = validate({"sinks": [{"type": "metrics", "listen": f"127.0.0.1:{free_port()}"},
                                   {"type": "store", "path": str(tmp_path / "a.db")},
                                   {"type": "metrics", "listen": f"127.0.0.1:{free_port()}"}]})
    everything = pipeline.build_sinks(settings)
    try:
        run_tags = [sink.tag for sink in everything if sink.config.type == "metrics"]
    finally:
        for sink in everything:
            sink.close()
    kept = pipeline.build_sinks(settings, types=("metrics",))
    try:
        assert [sink.tag for sink in kept] == run_tags == ["metrics0", "metrics2"], \
            "a collector's metrics sinks must keep the tags netmon run gives them"
    finally:
        for sink in kept:
            sink.close()


def test_a_collector_reports_the_newest_time_its_scorers_will_keep_whatever_the_batch_holds():
    """A collector's watermark comes from the newest row the scorers keep: rows no date can
    show and a stamp far ahead of the batch are left out, on the quick path (a batch of one
    day or less) and the other alike."""
    settings = validate({"campus": {"internal": ["10.0.0.0/8"]}, "cluster": {"partitions": 4}})
    sent: list = []
    outbox = Outbox(settings, sent.extend, "router-a")
    base = rows([("10.0.0.1", "192.0.2.1")] * 6, start=1.7e9)
    cases = {"one day or less": ([], 1.7e9 + 5), "a lone row": ([1.7e9 + 3], 1.7e9 + 3),
             "NaN": ([math.nan] + [1.7e9] * 5, 1.7e9), "dated 2**62 s": ([2.0**62] + [1.7e9] * 5, 1.7e9),
             "two days ahead": ([1.7e9 + 2 * 86400.0] + [1.7e9 + 1] * 5, 1.7e9 + 1),
             "the past year": ([1.7e9 - 365 * 86400.0] + [1.7e9 + 1] * 5, 1.7e9 + 1),
             "none dated": ([math.inf] * 3, None)}
    for name, (times, expected) in cases.items():
        batch = base.copy() if not times else base[:len(times)].copy()
        if times:
            batch["time"] = times
        assert outbox.insert(batch) == expected, f"{name}: newest kept time {outbox.insert(batch)}, not {expected}"
    assert sent, "the rows were not published"
