#!/usr/bin/env bash
# Make this checkout ready: system packages (Debian/Ubuntu), .venv, the package and its
# pinned dependencies. Idempotent; re-run after pulling.
set -euo pipefail
cd "$(dirname "$0")/.."

# mosquitto: the broker for `make run` and the MQTT tests; gcc-avr/avr-libc/simavr: the
# firmware's AVR build run in a simulator; dbus: the fake BlueZ of the BLE tests;
# systemd: systemd-analyze for the unit file; openssl: the MQTT TLS tests' certificates;
# python3-venv: venv on Debian's python.

missing=()
for cmd_pkg in mosquitto:mosquitto mosquitto_sub:mosquitto-clients gcc:gcc make:make avr-gcc:gcc-avr \
               simavr:simavr dbus-daemon:dbus systemd-analyze:systemd openssl:openssl; do
  command -v "${cmd_pkg%%:*}" >/dev/null 2>&1 || missing+=("${cmd_pkg#*:}")
done
[ -e /usr/lib/avr/include/avr/io.h ] || missing+=(avr-libc)
PY=${PYTHON:-python3}
"$PY" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a system mosquitto on install; nothing here depends on it.
fi

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python >= 3.11 is needed (found $("$PY" --version))" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
echo "setup: ready (.venv/bin/nmcore)"
