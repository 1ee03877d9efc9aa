#!/usr/bin/env bash
# Installs everything the tests use, then runs them. Extra arguments go to pytest.
# The tests start their own InfluxDB, VictoriaMetrics and Alertmanager on loopback,
# and their own NTP daemons and exporters inside network namespaces they create.
set -uo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh --all || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests" >&2
  rc=0
fi
exit "$rc"
