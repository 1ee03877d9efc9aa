#!/usr/bin/env bash
# The suite under CPU load, issue 11's bar: the whole suite RUNS times in a row (default 3)
# while `stress-ng --cpu 4` loads the machine; stops at the first run that fails.
#   bash tests/stress.sh [RUNS] [pytest arguments...]
#   STRESS_CPU=4 (CPU burners), STRESS_TIMEOUT=6h (the burner's own end, should this script
#   be killed before it can stop it).
# The burner is started here and stopped by its PID (stress-ng stops its workers when told
# to); nothing else is signalled. Timing-dependent tests must wait on conditions, never on
# fixed sleeps: this script is how that is checked.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=3
if [[ ${1:-} =~ ^[1-9][0-9]*$ ]]; then  # a first argument that is not a count goes to pytest
  runs=$1
  shift
fi
command -v stress-ng >/dev/null || { echo "stress.sh: stress-ng is missing (bash deploy/install.sh --all)" >&2; exit 1; }

stress-ng --cpu "${STRESS_CPU:-4}" --timeout "${STRESS_TIMEOUT:-6h}" --quiet &
burner=$!
stop_burner() {
  kill -TERM "$burner" 2>/dev/null
  wait "$burner" 2>/dev/null
}
trap stop_burner EXIT
trap 'exit 130' INT TERM

for run in $(seq 1 "$runs"); do
  started=$(date +%s)
  echo "== run $run of $runs under stress-ng --cpu ${STRESS_CPU:-4} (pid $burner), $(date -u +%H:%M:%SZ)"
  .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
  rc=$?
  echo "== run $run: exit $rc after $(( $(date +%s) - started )) s"
  if [ "$rc" != 0 ]; then
    echo "stress.sh: run $run of $runs failed under load" >&2
    exit "$rc"
  fi
done
echo "stress.sh: $runs of $runs runs passed under stress-ng --cpu ${STRESS_CPU:-4}"
