#!/usr/bin/env bash
# podman, runc and debootstrap from Debian's packages, for `make e2e-compose` on a machine without
# a Docker engine (deploy/compose-e2e/run.py). Does nothing when all three are on PATH.
# runc rather than crun: the runtime podman 4.3 runs containers with here. The packages' own
# services (podman.socket, podman.service) are not started, and under systemd not enabled: each
# run starts a podman API service of its own.
set -euo pipefail

if command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "podman, runc or debootstrap missing and no apt-get: install them so all three are on PATH" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "installing podman needs root or sudo" >&2; exit 1; }
  SUDO=(sudo)
fi

# Deny service starts for the length of the install unless a policy is already in place.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
fi

echo "installing podman, runc and debootstrap (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends podman runc debootstrap

if [ -d /run/systemd/system ]; then
  "${SUDO[@]}" systemctl disable --now podman.socket podman.service >/dev/null 2>&1 || true
fi
podman --version
