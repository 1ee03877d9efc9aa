"""Syslog hook: RFC 5424 messages over UDP and TCP (octet counting) to a real local receiver."""

from __future__ import annotations

import re

import pytest

from tests.alerts.receivers import finding, scored, wait_for
from tests.alerts.test_webhook import HOSTILE, sink

# RFC 5424: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
HEADER = re.compile(
    rb'^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>[!-~]{1,255}) netmon (?P<pid>[!-~]{1,128}) '
    rb'(?P<msgid>[!-~]{1,32}) (?P<sd>\[netmon@32473(?: [a-zA-Z]+="(?:[^"\\\]]|\\["\\\]])*")+\]) \xef\xbb\xbf(?P<msg>.*)$',
    re.S,
)


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_syslog_message_is_rfc5424_with_structured_data(tmp_path, syslog_receiver, protocol):
    s = sink(tmp_path, [{"kind": "syslog", "host": "127.0.0.1", "port": syslog_receiver.port, "protocol": protocol,
                         "facility": "local3", "hostname": "collector1"}])
    s.write(scored([finding(explanation=HOSTILE)]))
    s.close()
    got = syslog_receiver.udp if protocol == "udp" else syslog_receiver.tcp
    assert wait_for(lambda: len(got) == 1), f"{protocol}: receiver got {len(got)} messages"
    match = HEADER.match(got[0])
    assert match, f"not RFC 5424: {got[0][:300]!r}"
    assert int(match["pri"]) == 19 * 8 + 2, "local3 + crit"
    assert match["host"] == b"collector1" and match["msgid"] == b"firing"
    assert b'host="10.1.2.3"' in match["sd"] and b'rule="rule.kod_ignored"' in match["sd"]
    assert b"\n" not in match["msg"] and b"\r" not in match["msg"] and b"\x00" not in match["msg"]
    if protocol == "tcp":
        assert syslog_receiver.tcp_raw.startswith(str(len(got[0])).encode() + b" <"), "TCP framing is not octet counting"


def test_structured_data_escapes_quotes_and_brackets(tmp_path, syslog_receiver):
    s = sink(tmp_path, [{"kind": "syslog", "host": "127.0.0.1", "port": syslog_receiver.port, "protocol": "tcp"}])
    s.write(scored([finding(group='a"b]c\\d')]))
    s.close()
    assert wait_for(lambda: len(syslog_receiver.tcp) == 1)
    match = HEADER.match(syslog_receiver.tcp[0])
    assert match and b'group="a\\"b\\]c\\\\d"' in match["sd"], syslog_receiver.tcp[0][:400]
