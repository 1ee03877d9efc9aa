#!/usr/bin/env bash
# Installs netmon.
#   bash deploy/install.sh          into .venv at the repository root, editable (development;
#                                   enough to replay captures)
#   bash deploy/install.sh --all    also every Debian package the tests use (as root):
#                                   InfluxDB 1.x, VictoriaMetrics, Alertmanager, softflowd,
#                                   pmacct, nfdump, chrony, ntpsec, clang/libbpf, tshark,
#                                   nats-server, stress-ng (tests/stress.sh: the suite under CPU load)...
#   bash deploy/install.sh --prefix /opt/netmon [--cluster]
#                                   (--cluster: with the NATS client, for collectors and scorers)
#                                   a service install: a venv at PREFIX with netmon installed
#                                   NON-editable (a copy: the checkout can move, be deleted or be
#                                   hidden by the unit's ProtectHome=), PREFIX/bin/netmon being
#                                   what deploy/systemd/netmon.service runs
# Services are not started here: the tests start their own instances on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prefix" ]; then
  prefix=${2:?"--prefix needs a directory, e.g. /opt/netmon"}
  package=.
  [ "${3:-}" = "--cluster" ] && package=".[cluster]"  # the NATS client, for netmon run --role
  command -v python3 >/dev/null || { echo "install.sh: python3 is missing (apt-get install python3 python3-venv)" >&2; exit 1; }
  python3 -m venv --clear "$prefix"
  "$prefix/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$prefix/bin/python" -m pip install -q "$package"
  (cd / && "$prefix/bin/python" -c "import netmon.sources._pcapwalk" 2>/dev/null) ||  # the prefix's, not the checkout's
    echo "install.sh: no C compiler or Python headers here, so captures are read with the slower walk in Python (apt-get install gcc libc6-dev python3-dev, then install again for the compiled one)" >&2
  echo "netmon installed in $prefix (run $prefix/bin/netmon; the unit's ExecStart expects /opt/netmon/bin/netmon)"
  exit 0
fi

APT_TEST_PACKAGES=(
  influxdb victoria-metrics prometheus-alertmanager
  softflowd pmacct nfdump
  chrony tcpdump tshark
  clang llvm libbpf-dev bpftool iproute2 nftables
  systemd
  chromium
  nats-server
  stress-ng
)
# The compiled pcap record walk (setup.py, netmon/sources/_pcapwalk.c) is built by pip with
# these; without them pip still installs netmon, reading captures with the walk in Python.
BUILD_PACKAGES=(gcc libc6-dev python3-dev)
# Only asked to validate the compose file: no Docker engine (its Recommends) needed.
APT_TEST_NO_RECOMMENDS=(docker-compose)
# ntpsec conflicts with chrony in Debian (both provide time-daemon); the tests need
# both, so ntpsec is unpacked beside the system, never installed or started as a service.
NTPSEC_DIR=/opt/netmon-test/ntpsec

apt_ready=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "install.sh: need root to install Debian packages: $*" >&2
    exit 1
  fi
  if [ "$apt_ready" = 0 ]; then
    apt-get update -qq
    apt_ready=1
  fi
  # Packages such as chrony would otherwise start their daemon (and set the clock).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

not_installed() {
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
  done
}

missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv python3-pip)
command -v python3 >/dev/null || missing+=(python3)
if [ "${1:-}" = "--all" ]; then
  mapfile -t -O "${#missing[@]}" missing < <(not_installed "${APT_TEST_PACKAGES[@]}")
  mapfile -t bare < <(not_installed "${APT_TEST_NO_RECOMMENDS[@]}")
  [ ${#bare[@]} -eq 0 ] || apt_install --no-install-recommends "${bare[@]}"
fi
mapfile -t build < <(not_installed "${BUILD_PACKAGES[@]}")
if [ ${#build[@]} -gt 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: not root, so ${build[*]} stay uninstalled: captures are read with the slower walk in Python" >&2
else
  missing+=("${build[@]}")
fi
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

if [ "${1:-}" = "--all" ] && [ ! -x "$NTPSEC_DIR/usr/sbin/ntpd" ]; then
  [ "$apt_ready" = 1 ] || { apt-get update -qq; apt_ready=1; }
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq ntpsec 2>/dev/null)
  mkdir -p "$NTPSEC_DIR"
  dpkg-deb -x "$tmp"/ntpsec_*.deb "$NTPSEC_DIR"
  rm -rf "$tmp"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "--all" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
