#!/usr/bin/env bash
# Make this checkout ready: system packages (Debian/Ubuntu), .venv, the package and its
# pinned dependencies. Idempotent; re-run after pulling.
#   scripts/setup.sh run    what `make run` needs (broker, venv)
#   scripts/setup.sh test   also what the test suite needs (firmware toolchain, D-Bus, ...)
#   scripts/setup.sh bench  also the peers the benchmarks compare against (biosppy, NeuroKit2)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}

# Debian puts daemons in /usr/sbin, which a normal user's PATH lacks
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

# mosquitto: the broker for `make run` and the MQTT tests; python3-venv: venv on Debian's
# python. For tests also: gcc-avr/avr-libc/simavr (the firmware's AVR build run in a
# simulator), dbus (the fake BlueZ of the BLE tests), systemd (systemd-analyze for the unit
# file), openssl (the MQTT TLS tests' certificates).
needs=(mosquitto:mosquitto mosquitto_sub:mosquitto-clients)
if [ "$what" != run ]; then
  needs+=(gcc:gcc make:make avr-gcc:gcc-avr simavr:simavr dbus-daemon:dbus
          systemd-analyze:systemd openssl:openssl)
fi
missing=()
for cmd_pkg in "${needs[@]}"; do
  have "${cmd_pkg%%:*}" || missing+=("${cmd_pkg#*:}")
done
if [ "$what" != run ] && [ ! -e /usr/lib/avr/include/avr/io.h ]; then missing+=(avr-libc); fi
PY=${PYTHON:-python3}
"$PY" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "setup: these Debian packages are missing: ${missing[*]}" >&2
    echo "setup: install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a system mosquitto on install; nothing here depends on it.
fi

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python >= 3.11 is needed (found $("$PY" --version))" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
extras=dev
[ "$what" = bench ] && extras=dev,bench
.venv/bin/python -m pip install -q -c constraints.txt -e ".[$extras]"
echo "setup: ready (.venv/bin/nmcore)"
