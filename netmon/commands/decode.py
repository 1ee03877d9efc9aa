"""``netmon decode FILE...``: the NTP packets of capture files, one per line.

With ``--json`` each line is one JSON object: ``ts`` (capture time), ``src``,
``dst``, ``sport``, ``dport``, then the NTP fields named and scaled as in Zeek's
ntp.log (``version``, ``mode``, ``stratum``, ``poll`` and ``precision`` in seconds
(2^exponent), ``root_delay``, ``root_disp`` in seconds, ``ref_id`` as text,
``ref_time``, ``org_time``, ``rec_time``, ``xmt_time`` as UNIX seconds (0 = unset),
``num_exts``), plus ``leap``, ``mac_len``, ``poll_log2``, ``precision_log2``, ``kod``
(the kiss code of a Kiss-o'-Death, else null) and ``vlan``. Mode 6 and 7 packets carry
``response`` and ``opcode`` (mode 6) or ``req_code`` (mode 7) instead of the
modes 1-5 header fields. Without ``--json`` a short table, one packet per line.
A damaged file prints every packet before the fault, then the error with its offset,
and the command exits 1 (the rule ``replay`` follows too: :mod:`netmon.commands.damage`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click
import numpy as np

from netmon.batch import addr_text
from netmon import health
from netmon.commands.damage import fail_if_damaged, nothing_decoded_note
from netmon.decode.frames import decode_frames
from netmon.decode.ntp import is_kod, kod_code, ntp_to_unix, ref_id_text, short_to_seconds
from netmon.sources.pcapfile import CaptureError, read_frames

MODE_NAMES = {1: "sym-active", 2: "sym-passive", 3: "client", 4: "server", 5: "broadcast", 6: "control", 7: "private"}


def packet_records(rows: np.ndarray) -> Iterator[dict[str, Any]]:
    """One dict per observation row (OBS_DTYPE with NTP fields), as ``--json`` prints them."""
    kod = is_kod(rows)
    times = {name: ntp_to_unix(rows[f"{name}_ts"]) for name in ("ref", "org", "rec", "xmt")}
    for i, row in enumerate(rows):
        record: dict[str, Any] = {
            "ts": float(row["time"]),
            "src": addr_text(row["src_hi"], row["src_lo"]),
            "dst": addr_text(row["dst_hi"], row["dst_lo"]),
            "sport": int(row["sport"]),
            "dport": int(row["dport"]),
            "version": int(row["version"]),
            "mode": int(row["mode"]),
            "leap": int(row["leap"]),
        }
        mode = int(row["mode"])
        if mode <= 5:
            stratum = int(row["stratum"])
            record.update(
                stratum=stratum,
                poll=2.0 ** int(row["poll"]),
                precision=2.0 ** int(row["precision"]),
                root_delay=float(short_to_seconds(row["root_delay"])),
                root_disp=float(short_to_seconds(row["root_disp"])),
                ref_id=ref_id_text(stratum, int(row["ref_id"])),
                ref_time=float(times["ref"][i]),
                org_time=float(times["org"][i]),
                rec_time=float(times["rec"][i]),
                xmt_time=float(times["xmt"][i]),
                num_exts=int(row["num_exts"]),
                mac_len=int(row["mac_len"]),
                poll_log2=int(row["poll"]),
                precision_log2=int(row["precision"]),
                kod=kod_code(int(row["ref_id"])) if kod[i] else None,
            )
        else:
            record["response"] = bool(row["ctl_response"])
            record["opcode" if mode == 6 else "req_code"] = int(row["ctl_code"])
        record["vlan"] = int(row["vlan"])
        record["length"] = int(row["ntp_len"])
        yield record


def _line(record: dict[str, Any]) -> str:
    """A packet as one short human line."""
    where = f"{record['src']}:{record['sport']} > {record['dst']}:{record['dport']}"
    mode = MODE_NAMES.get(record["mode"], str(record["mode"]))
    head = f"{record['ts']:.6f} {where} v{record['version']} {mode}"
    if "stratum" in record:
        kod = f" KoD {record['kod']}" if record["kod"] else ""
        return (f"{head} stratum {record['stratum']} poll {record['poll_log2']} ref {record['ref_id']}"
                f" xmt {record['xmt_time']:.6f}{kod}")
    code = record.get("opcode", record.get("req_code"))
    return f"{head} {'response' if record['response'] else 'request'} code {code}"


def _print_rows(rows: np.ndarray, as_json: bool) -> None:
    write = sys.stdout.write
    for record in packet_records(rows):
        write((json.dumps(record) if as_json else _line(record)) + "\n")


@click.command("decode")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="one JSON object per packet (Zeek ntp.log field names)")
@click.option("--flows", is_flag=True, help="the files hold NetFlow/IPFIX/sFlow exports: print every flow record")
def command(files: tuple[str, ...], as_json: bool, flows: bool) -> None:
    """Print the NTP packets in capture FILEs (pcap, pcapng, gzip-compressed)."""
    failed: list[CaptureError] = []
    for path in files:
        try:
            if flows:
                from netmon.sources.netflow.listing import print_flows

                print_flows(path, as_json, sys.stdout.write)
                continue
            before, seen, printed = health.snapshot(), 0, 0
            for frames in read_frames(path):
                rows = decode_frames(frames)
                seen, printed = seen + len(frames), printed + len(rows)
                _print_rows(rows, as_json)
            if not printed and (note := nothing_decoded_note(path, seen, before)):
                click.echo(note, err=True)
        except CaptureError as exc:
            failed.append(exc)
    sys.stdout.flush()
    fail_if_damaged(failed)
