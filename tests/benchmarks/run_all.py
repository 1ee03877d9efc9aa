"""Every benchmark, one after another, and one Markdown table of what they measured.

Each benchmark runs as its own process (so one's imports and memory do not colour the
next) with ``NETMON_BENCH_RESULTS`` pointing at a scratch file, where it appends a row
per comparison (:mod:`ratios`). Their own reports go to this script's stderr; the
table goes to stdout and, with ``--out``, to a file, headed with the date and the
machine (cores, CPU model, load average), since every figure depends on both.

    .venv/bin/python tests/benchmarks/run_all.py [--quick] [--out tests/benchmarks/RESULTS.md] [--readme README.md]

``--quick`` runs smaller inputs (minutes instead of a quarter hour); the table says
which. ``--readme`` puts the table into that file's performance section, between the
``<!-- run_all -->`` and ``<!-- /run_all -->`` lines, replacing the last one. ``bench_live.py`` needs root (namespaces, eBPF) and is skipped, with a note,
without it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from ratios import Row, load

HERE = Path(__file__).resolve().parent

#: (script, full-size arguments, quick arguments)
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("bench_replay.py", [], ["--packets", "200000", "--tshark-packets", "20000", "--dpkt-packets", "50000",
                             "--scapy-packets", "5000"]),
    ("bench_flows.py", [], ["--datagrams", "5000"]),
    ("bench_aggregate.py", [], ["--rows", "200000"]),
    ("bench_scoring.py", [], ["--hosts", "100000"]),
    ("bench_influx.py", [], ["--intervals", "5", "--hosts", "2000"]),
    ("bench_live.py", [], ["--seconds", "1", "--rounds", "1", "--hosts", "20000"]),
]


def machine() -> str:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model or platform.machine()}, Linux {platform.release()}, Python {platform.python_version()}"


def verdict(row: Row) -> str:
    met = row.met()
    return "" if met is None else ("yes" if met else "**no**")


def number(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | measure | netmon | unit | peer | peer's | netmon / peer | bar | met |",
             "|---|---|---:|---|---|---:|---:|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        lines.append(f"| {r.bench} | {r.measure} | {number(r.netmon)} | {r.unit} ({r.better} is better) | {r.peer} | "
                     f"{number(r.peer_value)} | {ratio} | {r.bar} | {verdict(r)} |")
    return "\n".join(lines)


BEGIN, END = "<!-- run_all -->", "<!-- /run_all -->"


def into_readme(readme: Path, text: str) -> None:
    """Replace what stands between the BEGIN and END lines of ``readme`` with ``text``."""
    lines = readme.read_text().split("\n")
    if BEGIN not in lines or END not in lines:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} lines to put the table between")
    first, last = lines.index(BEGIN), lines.index(END)
    readme.write_text("\n".join(lines[: first + 1] + [text.rstrip("\n")] + lines[last:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--readme", type=Path, help="also put the table into this file's run_all section")
    parser.add_argument("--only", nargs="*", help="benchmark scripts to run (default: all)")
    args = parser.parse_args()
    failed = []
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        results.touch()
        env = {**os.environ, "NETMON_BENCH_RESULTS": str(results)}
        for script, full, quick in BENCHMARKS:
            if args.only and script not in args.only:
                continue
            if script == "bench_live.py" and os.geteuid() != 0:
                notes.append(f"{script} skipped: needs root (network namespaces, eBPF)")
                continue
            argv = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
            print(f"== {' '.join(argv[1:])}", file=sys.stderr, flush=True)
            done = subprocess.run(argv, env=env, cwd=HERE, stdout=sys.stderr, stderr=sys.stderr)
            if done.returncode != 0:
                failed.append(script)
                notes.append(f"{script} failed (exit {done.returncode}); its rows may be missing")
        rows = load(str(results))
    head = (f"Measured {datetime.date.today().isoformat()} on {machine()}; load average "
            f"{os.getloadavg()[0]:.1f} at the end{' (quick sizes)' if args.quick else ''}.")
    text = "\n\n".join([head, table(rows), *(f"- {n}" for n in notes)]) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.readme:
        into_readme(args.readme, text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
