"""Our NTP decoder held against every NTP packet the peers decoded in the corpus.

Peers: tshark (a JSON oracle next to every pcap), Zeek (ntp.log, ntp_control.log,
ntp_private.log and the printed ntp_message events), tcpdump ``-v`` text, scapy's
test expectations and Suricata's Lua output. Where a peer is wrong, the reason is
pinned here (see MANIFEST.md section 5) and our value is checked against the right one.
"""

from __future__ import annotations

import ipaddress
import json
import math
from pathlib import Path

import numpy as np
import pytest

from netmon import health
from netmon.batch import addr_text
from netmon.decode.ntp import ntp_to_unix, ref_id_text, short_to_seconds
from tests.decode import oracles

#: frames a peer decodes as NTP that we refuse, with the reason the peer is wrong
REFUSED: dict[tuple[str, int], str] = {
    ("zeek/ntp-no-extensions-mac.pcap", 1): (
        "MANIFEST 5.6: OSS-Fuzz garbage (73-byte payload, 25 bytes after the header: neither "
        "extension fields nor a MAC); Zeek refuses it, tshark decodes garbage values"
    ),
}


def _unix_of_tshark(ntp: dict, key: str) -> float:
    return oracles.tshark_time(ntp[key])


@pytest.mark.parametrize("name", oracles.NTP_PCAPS)
def test_every_frame_tshark_decodes_as_ntp_decodes_to_the_same_fields(corpus: Path, name: str) -> None:
    path = corpus / name
    ours = oracles.decode_file(path)
    theirs = oracles.tshark_ntp(path)
    assert theirs, f"{name}: tshark oracle has no NTP frames"
    for number, ntp in theirs.items():
        if (name, number) in REFUSED:
            assert number not in ours, f"{name} #{number} should be refused: {REFUSED[(name, number)]}"
            continue
        assert number in ours, f"{name} frame {number}: tshark decodes NTP, we found none"
        row = ours[number]
        flags = ntp["ntp.flags_tree"]
        where = f"{name} frame {number}"
        assert row["mode"] == int(flags["ntp.flags.mode"]), where
        assert row["version"] == int(flags["ntp.flags.vn"]), where
        if "ntp.flags.li" in flags:
            assert row["leap"] == int(flags["ntp.flags.li"]), where
        if "ntp.stratum" in ntp:
            assert row["stratum"] == int(ntp["ntp.stratum"]), where
        if "ntp.ppoll" in ntp:
            assert int(row["poll"]) & 0xFF == int(ntp["ntp.ppoll"]), where
        if "ntp.precision" in ntp:
            assert int(row["precision"]) & 0xFF == int(ntp["ntp.precision"]), where
        if "ntp.rootdelay" in ntp:
            assert row["root_delay"] == int(ntp["ntp.rootdelay"]), where
            assert row["root_disp"] == int(ntp["ntp.rootdispersion"]), where
        if "ntp.refid" in ntp:
            assert row["ref_id"] == int(ntp["ntp.refid"].replace(":", ""), 16), where
        for key, column in (("ntp.reftime", "ref_ts"), ("ntp.org", "org_ts"), ("ntp.rec", "rec_ts"), ("ntp.xmt", "xmt_ts")):
            if key in ntp:
                assert ntp_to_unix(row[column]) == pytest.approx(_unix_of_tshark(ntp, key), abs=1e-6), f"{where} {column}"
        if "ntp.ctrl.flags2_tree" in ntp:
            ctrl = ntp["ntp.ctrl.flags2_tree"]
            assert row["ctl_response"] == int(ctrl["ntp.ctrl.flags2.r"]), where
            assert row["ctl_code"] == int(ctrl["ntp.ctrl.flags2.opcode"]), where
        if "ntp.priv.reqcode" in ntp:
            assert row["ctl_response"] == int(flags["ntp.priv.flags.r"]), where
            assert row["ctl_code"] == int(ntp["ntp.priv.reqcode"]), where
        if row["mode"] <= 5:
            assert (row["mac_len"] > 0) == ("ntp.keyid" in ntp or "ntp.mac" in ntp), f"{where}: MAC presence"


def test_a_refused_frame_is_counted_as_a_skip_not_lost_silently(corpus: Path) -> None:
    oracles.decode_file(corpus / "zeek/ntp-no-extensions-mac.pcap")
    assert health.snapshot().get("decode.skip.bad_extension") == 1


ZEEK_LOGS = ("NTP-digest", "NTP_sync", "misordered-ntp", "ntp", "ntp2")


def _zeek_ref_id(row: np.void) -> str:
    """The reference ID the way Zeek's ntp.log writes it."""
    if row["stratum"] >= 2:
        return ref_id_text(int(row["stratum"]), int(row["ref_id"]))
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in int(row["ref_id"]).to_bytes(4, "big"))


@pytest.mark.parametrize("stem", ZEEK_LOGS)
def test_zeek_ntp_log_rows_match_ours_field_by_field(corpus: Path, stem: str) -> None:
    ours = [r for _, r in sorted(oracles.decode_file(corpus / f"zeek/{stem}.pcap").items()) if r["mode"] <= 5]
    theirs = oracles.zeek_log(corpus / f"zeek/{stem}.zeek-ntp.log")
    assert len(ours) == len(theirs), f"{stem}: {len(ours)} messages, Zeek logged {len(theirs)}"
    for i, (row, log) in enumerate(zip(ours, theirs)):
        where = f"{stem} ntp.log row {i + 1}"
        pair = {addr_text(row["src_hi"], row["src_lo"]), addr_text(row["dst_hi"], row["dst_lo"])}
        assert pair == {log["id.orig_h"], log["id.resp_h"]}, where
        assert (row["version"], row["mode"], row["stratum"]) == (int(log["version"]), int(log["mode"]), int(log["stratum"])), where
        assert f"{2.0 ** int(row['poll']):.6f}" == log["poll"], where
        assert f"{2.0 ** int(row['precision']):.6f}" == log["precision"], where
        assert f"{short_to_seconds(row['root_delay']):.6f}" == log["root_delay"], where
        assert f"{short_to_seconds(row['root_disp']):.6f}" == log["root_disp"], where
        assert _zeek_ref_id(row) == log["ref_id"], where
        for column, field in (("ref_ts", "ref_time"), ("org_ts", "org_time"), ("rec_ts", "rec_time"), ("xmt_ts", "xmt_time")):
            assert float(ntp_to_unix(row[column])) == pytest.approx(float(log[field]), abs=1.01e-6), f"{where} {field}"
        assert row["num_exts"] == int(log["num_exts"]), where


@pytest.mark.parametrize("stem", ZEEK_LOGS[:2] + ZEEK_LOGS[3:])
def test_zeek_printed_messages_match_precision_mac_and_mode7_codes(corpus: Path, stem: str) -> None:
    ours = [r for _, r in sorted(oracles.decode_file(corpus / f"zeek/{stem}.pcap").items())]
    theirs = oracles.zeek_messages(corpus / f"zeek/{stem}.zeek-stdout")
    assert len(ours) == len(theirs), f"{stem}: {len(ours)} messages, Zeek printed {len(theirs)}"
    for i, (row, msg) in enumerate(zip(ours, theirs)):
        where = f"{stem} message {i + 1}"
        assert (row["version"], row["mode"]) == (int(msg["version"]), int(msg["mode"])), where
        if row["mode"] == 7:
            assert row["ctl_code"] == int(msg["req_code"]), where
            continue
        assert 2.0 ** int(row["precision"]) == pytest.approx(oracles.zeek_interval(msg["precision"]), rel=1e-5), where
        assert 2.0 ** int(row["poll"]) == pytest.approx(oracles.zeek_interval(msg["poll"]), rel=1e-9), where
        if msg["key_id"] == "<uninitialized>":
            assert row["mac_len"] == 0, where
        else:
            digest = oracles.zeek_bytes(msg["digest"])
            assert row["mac_len"] == 4 + len(digest), where
        code = msg["kiss_code"] if row["stratum"] == 0 else msg["ref_id"] if row["stratum"] == 1 else None
        if code is not None:
            assert int(row["ref_id"]).to_bytes(4, "big") == oracles.zeek_bytes(code), where
        else:
            assert ref_id_text(int(row["stratum"]), int(row["ref_id"])) == msg["ref_addr"], where


def test_zeek_control_and_private_logs_match_mode_6_and_7_codes(corpus: Path) -> None:
    rows = [r for _, r in sorted(oracles.decode_file(corpus / "zeek/ntpmode67.pcap").items())]
    control = oracles.zeek_log(corpus / "zeek/ntpmode67.zeek-ntp_control.log")
    private = oracles.zeek_log(corpus / "zeek/ntpmode67.zeek-ntp_private.log")
    ours6 = [r for r in rows if r["mode"] == 6]
    ours7 = [r for r in rows if r["mode"] == 7]
    assert [(int(r["ctl_code"]), bool(r["ctl_response"])) for r in ours6] == [
        (int(c["op_code"]), c["resp_bit"] == "T") for c in control
    ]
    assert [int(r["ctl_code"]) for r in ours7] == [int(p["req_code"]) for p in private]
    assert [int(r["version"]) for r in ours7] == [int(p["version"]) for p in private]


TCPDUMP_VERBOSE = ("ntp-v", "ntp-time--v", "ntp-time-ef--v", "ntp-control--v", "ntp-mode7--v")


def _ntp_seconds_fraction(raw: int) -> tuple[int, int]:
    """A raw timestamp as tcpdump prints it: NTP seconds and the fraction in ns (truncated)."""
    return raw >> 32, ((raw & 0xFFFFFFFF) * 1_000_000_000) >> 32


def _truncated_us(raw: int) -> str:
    """MANIFEST 5.2: tcpdump truncates root delay/dispersion to microseconds instead of rounding."""
    return f"{math.floor(raw / 65536 * 1e6) / 1e6:.6f}"


@pytest.mark.parametrize("stem", TCPDUMP_VERBOSE)
def test_tcpdump_verbose_output_matches_ours(corpus: Path, stem: str) -> None:
    pcap = corpus / f"tcpdump/{stem.split('--')[0].removesuffix('-v')}.pcap"
    ours = oracles.decode_file(pcap)
    theirs = oracles.tcpdump_verbose(corpus / f"tcpdump/{stem}.out")
    assert set(theirs) == set(ours), f"{stem}: packets differ"
    for number, dump in theirs.items():
        row = ours[number]
        where = f"{stem} packet {number}"
        assert row["version"] == dump["version"] and row["ntp_len"] == dump["length"], where
        if row["mode"] == 7:
            # MANIFEST 5.3: tcpdump prints mode 7's R/M bits as a leap indicator; the R bit is the top one.
            assert dump["leap_bits"] == row["ctl_response"] << 7, where
            continue
        assert dump["leap_bits"] == row["leap"] << 6, where
        if row["mode"] == 6:
            assert (dump["response"], dump["opcode"]) == (bool(row["ctl_response"]), int(row["ctl_code"])), where
            continue
        assert (dump["stratum"], dump["poll"], dump["precision"]) == (row["stratum"], row["poll"], row["precision"]), where
        assert dump["root_delay"] == _truncated_us(int(row["root_delay"])), where
        assert dump["root_disp"] == _truncated_us(int(row["root_disp"])), where
        for label, column in (("Reference", "ref_ts"), ("Origin", "org_ts"), ("Receive", "rec_ts"), ("Transmit", "xmt_ts")):
            assert dump[label] == _ntp_seconds_fraction(int(row[column])), f"{where} {label}"
        assert dump["exts"] == row["num_exts"], where
        if "key_id" in dump:
            assert row["mac_len"] == 4 + dump.get("digest_len", 0), where
        else:
            assert row["mac_len"] == 0, where
        if row["stratum"] >= 2:
            assert dump["ref_id"] == f"0x{int(row['ref_id']):08x}", where


def test_tcpdump_and_ours_place_an_msb_clear_timestamp_in_era_1(corpus: Path) -> None:
    row = oracles.decode_file(corpus / "tcpdump/ntp.pcap")[3]
    assert int(row["rec_ts"]) >> 32 == 1802554105
    assert ntp_to_unix(row["rec_ts"]) == pytest.approx(3888532601.694, abs=1e-3), "2093-03-22T03:56:41Z"


def _scapy_value(row: np.void, field: str) -> object | None:
    """Our value for one of scapy's attribute paths, or None when we do not decode that field."""
    mode = int(row["mode"])
    simple = {
        "p.version": int(row["version"]), "p.mode": mode, "p.leap": int(row["leap"]), "p.stratum": int(row["stratum"]),
        "p.ref_id": {"bytes_hex": int(row["ref_id"]).to_bytes(4, "big").hex()},
        "p.response": int(row["ctl_response"]), "p.request_code": int(row["ctl_code"]), "p.op_code": int(row["ctl_code"]),
    }
    return simple.get(field)


SCAPY_CLASS = {"NTPHeader": (1, 2, 3, 4, 5), "NTPControl": (6,), "NTPPrivate": (7,)}


def test_scapy_vectors_decode_to_scapy_expectations(corpus: Path) -> None:
    spec = json.loads((corpus / "scapy/scapy-ntp-vectors.expected.json").read_text())
    ours = oracles.decode_file(corpus / "scapy/scapy-ntp-vectors.wrapped.pcap")
    checked = 0
    for vector in spec["vectors"]:
        row = ours.get(vector["wrapped_pcap_frame"])
        assert row is not None, f"scapy vector {vector['title']!r} not decoded"
        for expect in vector["expect"]:
            field = expect["field"]
            if "scapy_class" in expect and field == "p":
                assert row["mode"] in SCAPY_CLASS[expect["scapy_class"]], vector["title"]
                checked += 1
            elif field in ("p.authenticator.key_id", "p[NTPAuthenticator].key_id") and row["mode"] <= 5:
                assert row["mac_len"] >= 4, vector["title"]
                checked += 1
            elif field == "str(pkt.orig)":
                seconds, fraction = expect["equals"].split(".")
                assert int(row["org_ts"]) >> 32 == int(seconds), vector["title"]
                checked += 1
            elif (value := _scapy_value(row, field)) is not None and "equals" in expect:
                if field == "p.op_code" and row["mode"] != 6 or field == "p.request_code" and row["mode"] != 7:
                    continue
                assert value == expect["equals"], f"{vector['title']}: {field}"
                checked += 1
    assert checked >= 250, f"only {checked} scapy expectations checked"


def test_suricata_lua_log_lines_match_ours(corpus: Path) -> None:
    rows = [r for _, r in sorted(oracles.decode_file(corpus / "suricata/ntp-keywords.pcap").items())]
    ours = [
        f"NTP version={r['version']} mode={r['mode']} stratum={r['stratum']} reference_id="
        + ":".join(f"{b:02x}" for b in int(r["ref_id"]).to_bytes(4, "big"))
        for r in rows
    ]
    assert ours == (corpus / "suricata/ntp-keywords.lua-ntp.log").read_text().splitlines()


def test_ipv6_peers_refid_is_printed_as_a_dotted_quad_like_zeek(corpus: Path) -> None:
    rows = oracles.decode_file(corpus / "zeek/NTP-digest.pcap")
    row = next(iter(rows.values()))
    assert ipaddress.ip_address(addr_text(row["src_hi"], row["src_lo"])).version == 6
    assert ref_id_text(int(row["stratum"]), int(row["ref_id"])) == "182.165.128.219"
