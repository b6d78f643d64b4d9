#!/usr/bin/env bash
# promtool and the Prometheus server from Debian's `prometheus` package, for `make deploy-check`
# and the end-to-end suite. Does nothing when both are on PATH. The package's own service is
# not started (qun's tests run their own Prometheus on a free port) and, under systemd, not enabled.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "promtool/prometheus missing and no apt-get: install Prometheus 2.x so both are on PATH" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "installing prometheus needs root or sudo" >&2; exit 1; }
  SUDO=(sudo)
fi

# Deny service starts for the length of the install unless a policy is already in place.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
fi

echo "installing promtool and prometheus (Debian package prometheus)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends prometheus

if [ -d /run/systemd/system ]; then
  "${SUDO[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
promtool --version | head -n 1
