"""What the listing commands print (issue 13 items 2 and 7): tables that fit the terminal,
``--format json|csv``, a bounded ``report``, logs on stderr and only output on stdout."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from netmon.cli import COMMANDS, main
from tests.evidence.incident import QUIET, RUNAWAY, write_incident_pcap

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, Path]:
    """The incident capture (a runaway flagged in every one of its 21 intervals) replayed into a store."""
    tmp = tmp_path_factory.mktemp("store")
    pcap = tmp / "edge.pcap"
    write_incident_pcap(pcap)
    done = netmon(tmp, "replay", str(pcap), "--internal", "10.0.0.0/8", "--db", str(tmp / "n.db"),
                  "--state", str(tmp / "state.ckpt"))
    assert done.returncode == 0, done.stderr
    return {"tmp": tmp, "pcap": pcap, "db": tmp / "n.db", "replay": done}


def netmon(cwd: Path, *args: str, columns: int | None = None) -> subprocess.CompletedProcess:
    """The real command in a child process, stdout and stderr piped apart (cwd: where models/ goes)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "netmon", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def cli(*args: str, columns: int = 100):
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(main, list(args), catch_exceptions=False)


def test_help_lists_every_command_without_importing_any():
    probe = ("import sys\nfrom netmon.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print([m for m in sys.modules if m.startswith('netmon.commands.') or m in ('numpy', 'structlog')])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", f"--help imported: {done.stdout.splitlines()[-1]}"
    for name in COMMANDS:
        assert f"  {name} " in done.stdout, f"{name} missing from --help"
        assert main.get_command(None, name) is not None, f"{name} names no module with a command"


def test_item2_hosts_table_fits_100_columns_one_line_per_host(store):
    result = cli("hosts", "--db", str(store["db"]), columns=100)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    too_wide = [line for line in lines if len(line) > 100]
    assert not too_wide, f"lines wider than 100 columns: {too_wide}"
    assert [line for line in lines if line.startswith(RUNAWAY)], f"runaway host not on a row of its own:\n{result.output}"
    assert len(lines) <= 8, f"2 hosts took {len(lines)} lines:\n{result.output}"
    assert "reason" in lines[1] and "score" in lines[1], "the score and the reason must survive a narrow terminal"


def test_item2_piped_table_follows_columns_not_a_fixed_160(store):
    wide = netmon(store["tmp"], "hosts", "--db", str(store["db"]), columns=200).stdout
    narrow = netmon(store["tmp"], "hosts", "--db", str(store["db"]), columns=60).stdout
    piped = netmon(store["tmp"], "hosts", "--db", str(store["db"])).stdout
    assert max(map(len, narrow.splitlines())) <= 60, narrow
    assert max(map(len, piped.splitlines())) <= 100, f"piped output without $COLUMNS is wider than 100:\n{piped}"
    assert "last seen" in wide.splitlines()[1] and "last seen" not in narrow.splitlines()[1], f"200 columns show no more:\n{wide}"
    assert 100 < max(map(len, wide.splitlines())) <= 200, f"a wide terminal should get more, within 200:\n{wide}"


def test_item2_hosts_json_and_csv_carry_every_field(store):
    rows = json.loads(cli("hosts", "--db", str(store["db"]), "--format", "json").output)
    assert [r["host"] for r in rows] == [RUNAWAY, QUIET]
    assert rows[0]["findings"] == 81 and rows[0]["last"].endswith("Z") and "client instances" in rows[0]["reason"]
    table = list(csv.DictReader(io.StringIO(cli("hosts", "--db", str(store["db"]), "--format", "csv").output)))
    assert [r["host"] for r in table] == [RUNAWAY, QUIET] and set(table[0]) == set(rows[0]), "csv and json differ"


def test_item2_silence_list_formats(tmp_path):
    path = str(tmp_path / "s.json")
    assert cli("silence", "add", "--host", "10.1.2.3", "--reason", "lab box, ticket 42", "--file", path).exit_code == 0
    table = cli("silence", "list", "--file", path).output
    assert "host=10.1.2.3" in table and "never" in table, table
    (row,) = json.loads(cli("silence", "list", "--file", path, "--format", "json").output)
    assert row["match"] == "host=10.1.2.3" and row["expires"] is None and row["reason"] == "lab box, ticket 42"
    (line,) = csv.DictReader(io.StringIO(cli("silence", "list", "--file", path, "--format", "csv").output))
    assert line["reason"] == "lab box, ticket 42", "a comma in the reason broke the CSV"


def test_item2_muzzle_list_formats_in_dry_run(tmp_path):
    result = cli("muzzle", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == []


def test_item2_report_last_is_bounded_and_summarised(store):
    result = cli("report", RUNAWAY, "--db", str(store["db"]), "--last", "5")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) < 40, f"report --last 5 printed {len(lines)} lines"
    assert "81 findings by detector" in result.output and "rule.kod_ignored" in result.output, result.output
    too_wide = [line for line in lines if len(line) > 100 and not line.startswith("packets: ")]
    assert not too_wide, f"table lines wider than the terminal: {too_wide}"
    whole = json.loads(cli("report", RUNAWAY, "--db", str(store["db"]), "--last", "5", "--format", "json").output)
    assert whole["findings_total"] == 81 and len(whole["findings"]) == 5 and len(whole["intervals"]) == 5
    assert {r["detector"]: r["findings"] for r in whole["summary"]} == {
        "rule.kod_ignored": 21, "rule.origin": 21, "rule.poll_rate": 19, "hosts.level": 20}
    rows = list(csv.DictReader(io.StringIO(
        cli("report", RUNAWAY, "--db", str(store["db"]), "--format", "csv", "--part", "summary").output)))
    assert len(rows) == 4


def test_item7_logs_go_to_stderr_stdout_carries_the_output(store):
    done = store["replay"]
    assert "checkpoint saved" in done.stderr, "log lines should be on stderr"
    assert "checkpoint" not in done.stdout and "[info" not in done.stdout, f"log lines on stdout:\n{done.stdout}"
    assert done.stdout.startswith("21 intervals scored; 81 findings on 1 host\n"), done.stdout


def test_item7_findings_json_dash_writes_stdout(store, tmp_path):
    done = netmon(tmp_path, "replay", str(store["pcap"]), "--internal", "10.0.0.0/8", "--db", str(tmp_path / "n.db"),
                  "--findings-json", "-")
    assert done.returncode == 0, done.stderr
    findings = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(findings) == 81 and {f["host"] for f in findings} == {RUNAWAY}
    assert not (tmp_path / "-").exists(), "--findings-json - wrote a file named '-'"
    assert "81 findings on 1 host" in done.stderr, "the summary belongs on stderr when stdout carries JSON"


def test_item7_run_with_a_bad_config_says_what_check_config_says(tmp_path):
    """The config loads; the influx sink's missing token file stops it at start (as deploy/netmon.toml
    does on a machine without the credential)."""
    write_incident_pcap(tmp_path / "edge.pcap")
    config = tmp_path / "netmon.toml"
    config.write_text(f'[campus]\ninternal = ["10.0.0.0/8"]\n[[sources]]\ntype = "pcap"\npaths = ["{tmp_path / "edge.pcap"}"]\n'
                      '[[sinks]]\ntype = "influx"\nurl = "http://127.0.0.1:9"\norg = "o"\nbucket = "b"\n'
                      f'token_file = "{tmp_path}/missing-token"\n')
    check = netmon(tmp_path, "check-config", str(config))
    run = netmon(tmp_path, "run", "--config", str(config))
    assert check.returncode == run.returncode == 2, (check.stderr, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    assert check.stderr.strip() and check.stderr.strip() in run.stderr, (check.stderr, run.stderr)
    assert "credential file" in check.stderr, check.stderr
    assert "not started" in run.stderr and len(run.stderr.strip().splitlines()) <= len(check.stderr.strip().splitlines()) + 3, \
        run.stderr
