"""NTP header decoding, extension fields and MACs, and the conversions everyone uses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmon import health
from netmon.batch import OBS_DTYPE
from netmon.decode.encode import frames_from_observations
from netmon.decode.frames import decode_frames
from netmon.decode.ntp import (
    KOD_RATE, decode_ntp, is_kod, is_monlist, kod_code, ntp_to_unix, ref_id_text, short_to_seconds,
)
from tests.decode import builders

NTP_FIELDS = ("leap", "version", "mode", "stratum", "poll", "precision", "root_delay", "root_disp", "ref_id",
              "ref_ts", "org_ts", "rec_ts", "xmt_ts", "num_exts", "mac_len", "ctl_response", "ctl_code")


def _payload_rows(payloads: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    data = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    length = np.array([len(p) for p in payloads])
    at = np.concatenate(([0], np.cumsum(length)[:-1]))
    rows = np.zeros(len(payloads), dtype=OBS_DTYPE)
    return rows, decode_ntp(data, at, length, length, rows)


def test_timestamps_with_the_top_bit_clear_fall_in_era_1_and_zero_means_unset() -> None:
    assert ntp_to_unix(0) == 0.0
    assert ntp_to_unix(0xE900_0000 << 32) == 0xE900_0000 - 2_208_988_800
    assert ntp_to_unix(0x0000_0001 << 32) == 2**32 + 1 - 2_208_988_800, "1 s into era 1 is 2036-02-07T06:28:17Z"
    assert ntp_to_unix((0xE900_0000 << 32) | 0x8000_0000) == pytest.approx(0xE900_0000 - 2_208_988_800 + 0.5)


def test_short_format_is_16_16_fixed_point_seconds() -> None:
    assert short_to_seconds(0x0001_8000) == 1.5


@pytest.mark.parametrize(
    "stratum, ref_id, text",
    [(2, 0xC0000201, "192.0.2.1"), (1, int.from_bytes(b"GPS\0", "big"), "GPS"), (0, KOD_RATE, "RATE"),
     (0, 0, ""), (1, 0x01020304, "\\x01\\x02\\x03\\x04")],
)
def test_reference_id_text_follows_the_stratum(stratum: int, ref_id: int, text: str) -> None:
    assert ref_id_text(stratum, ref_id) == text


def test_kiss_of_death_needs_leap_3_stratum_0_in_a_reply() -> None:
    rows = builders.rows(4, mode=4, leap=[3, 3, 0, 3], stratum=[0, 0, 0, 2], ref_id=KOD_RATE)
    rows["mode"][1] = 3
    rows["ntp"] = 1
    assert is_kod(rows).tolist() == [True, False, False, False]
    assert kod_code(KOD_RATE) == "RATE"


def test_monlist_is_mode_7_request_code_20_or_42() -> None:
    rows = builders.rows(3, mode=7, ctl_code=[42, 20, 1])
    assert is_monlist(rows).tolist() == [True, True, False]


HEADER = bytes([0x23]) + bytes(47)


@pytest.mark.parametrize(
    "trailer, exts, mac",
    [
        (b"", 0, 0),
        (bytes(4), 0, 4),  # crypto-NAK
        (b"\0\0\0\1" + bytes(16), 0, 20),  # MD5
        (b"\0\0\0\1" + bytes(20), 0, 24),  # SHA-1
        (b"\x01\x04\x00\x10" + bytes(12) + b"\x02\x04\x00\x1c" + bytes(24), 2, 0),  # two extension fields
        (b"\x01\x04\x00\x10" + bytes(12) + b"\0\0\0\1" + bytes(16), 1, 20),  # extension field + MAC
        (b"\0\0\0\1" + bytes(32), 0, 36),  # a 32-byte digest: read as a MAC, like tshark and scapy
    ],
    ids=["none", "crypto-nak", "md5", "sha1", "two-exts", "ext-and-mac", "long-mac"],
)
def test_extension_fields_and_mac_are_told_apart(trailer: bytes, exts: int, mac: int) -> None:
    rows, ntp = _payload_rows([HEADER + trailer])
    assert ntp.tolist() == [True]
    assert (rows["num_exts"][0], rows["mac_len"][0]) == (exts, mac)


@pytest.mark.parametrize("payload, reason", [
    (bytes([0x03]) + bytes(47), "not_ntp"),  # version 0
    (bytes([0x20]) + bytes(47), "not_ntp"),  # mode 0
    (bytes([0x3B]) + bytes(47), "not_ntp"),  # version 7
    (HEADER[:40], "not_ntp"),  # too short for a mode 3 header
    (HEADER + bytes(25), "bad_extension"),  # 25 bytes after the header: neither extension nor MAC
    (HEADER + bytes(100), "bad_extension"),  # longer than any MAC and no valid extension field
])
def test_payloads_that_are_not_ntp_are_counted_by_reason(payload: bytes, reason: str) -> None:
    rows, ntp = _payload_rows([payload])
    assert ntp.tolist() == [False]
    assert health.snapshot() == {f"decode.skip.{reason}": 1.0}


def test_mode_6_and_7_headers_give_the_response_bit_and_code() -> None:
    control = bytes([0x16, 0x82]) + bytes(10)  # v2 mode 6, response, opcode 2
    private = bytes([0x97, 0x00, 0x03, 42]) + bytes(4)  # response, v2 mode 7, impl 3, MON_GETLIST_1
    rows, ntp = _payload_rows([control, private])
    assert ntp.tolist() == [True, True]
    assert rows[["mode", "ctl_response", "ctl_code", "leap"]].tolist() == [(6, 1, 2, 0), (7, 1, 42, 0)]


row_strategy = st.fixed_dictionaries({
    "leap": st.integers(0, 3), "version": st.integers(1, 4), "mode": st.integers(1, 7),
    "stratum": st.integers(0, 255), "poll": st.integers(-128, 127), "precision": st.integers(-128, 127),
    "root_delay": st.integers(0, 2**32 - 1), "root_disp": st.integers(0, 2**32 - 1), "ref_id": st.integers(0, 2**32 - 1),
    "ref_ts": st.integers(0, 2**64 - 1), "org_ts": st.integers(0, 2**64 - 1), "rec_ts": st.integers(0, 2**64 - 1),
    "xmt_ts": st.integers(0, 2**64 - 1), "num_exts": st.integers(0, 3), "mac_len": st.sampled_from([0, 4, 20, 24]),
    "ctl_response": st.integers(0, 1), "ctl_code": st.integers(0, 31),
    "v6": st.booleans(), "vlan": st.integers(0, 4095),
})


@settings(max_examples=60, deadline=None)
@given(specs=st.lists(row_strategy, min_size=1, max_size=30))
def test_encoded_rows_decode_back_to_the_same_fields(specs: list[dict]) -> None:
    rows = builders.rows(len(specs))
    for i, spec in enumerate(specs):
        for name, value in spec.items():
            if name == "v6":
                if value:
                    rows["src_hi"][i], rows["dst_hi"][i] = 0x20010DB8 << 32, 0x20010DB8 << 32
            else:
                rows[name][i] = value
    # An extension field of 16 bytes plus a 4-byte crypto-NAK is 20 bytes, exactly an MD5
    # MAC: RFC 7822 cannot tell them apart on the wire, so the round trip leaves it out.
    rows["mac_len"] = np.where((rows["num_exts"] > 0) & (rows["mac_len"] == 4), 20, rows["mac_len"])
    mode = rows["mode"]
    rows["leap"] = np.where(mode == 7, 0, rows["leap"])
    plain = mode <= 5
    for name in NTP_FIELDS[3:15]:
        rows[name] = np.where(plain, rows[name], 0)
    rows["ctl_response"] = np.where(plain, 0, rows["ctl_response"])
    rows["ctl_code"] = np.where(plain, 0, rows["ctl_code"])
    decoded = decode_frames(frames_from_observations(rows))
    assert len(decoded) == len(rows), dict(health.snapshot())
    for name in NTP_FIELDS + ("vlan", "sport", "dport", "src_hi", "src_lo"):
        assert decoded[name].tolist() == rows[name].tolist(), name
