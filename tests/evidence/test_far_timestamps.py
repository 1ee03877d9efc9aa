"""Listings of a store filled from a capture whose timestamps no calendar date can say."""

from __future__ import annotations

from netmon.report.listing import iso, when


def test_a_time_past_the_calendar_is_listed_as_unknown_not_a_traceback():
    # a pcapng's if_tsoffset of 2^62 s puts every packet ~146 billion years ahead (the worst-hosts
    # table `netmon replay` prints after scoring raised OSError on it)
    assert iso(2.0 ** 62) is None and when(2.0 ** 62) == "-"
    assert iso(-(2.0 ** 62)) is None
    assert iso(0.0) == "1970-01-01T00:00:00Z"
