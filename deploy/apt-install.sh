#!/usr/bin/env bash
# Installs Debian packages for a tool the tests need, without starting their services:
#   apt-install.sh "<what, for messages>" "<systemd units to keep off>" <package>...
# Used by install-prometheus.sh and tests/containers/install-tools.sh once they found their commands
# missing. The packages' services are not started during the install (a policy-rc.d denies them
# unless one is in place) and, under systemd, are disabled afterwards: qun runs its own.
set -euo pipefail

what=$1
units=$2
shift 2

if ! command -v apt-get >/dev/null 2>&1; then
  echo "$what missing and no apt-get: install them so they are on PATH" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "installing $what needs root or sudo" >&2; exit 1; }
  SUDO=(sudo)
fi

POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
fi

echo "installing $what (Debian packages: $*)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@"

if [ -n "$units" ] && [ -d /run/systemd/system ]; then
  # shellcheck disable=SC2086 # the units are a space-separated list
  "${SUDO[@]}" systemctl disable --now $units >/dev/null 2>&1 || true
fi
