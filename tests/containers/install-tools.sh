#!/usr/bin/env bash
# podman, runc and debootstrap from Debian's packages, for `make e2e-compose` on a machine without
# a Docker engine (tests/containers). Does nothing when all three are on PATH.
# runc rather than crun: the runtime podman 4.3 runs containers with here. The packages' own
# services (podman.socket, podman.service) are not started, and under systemd not enabled: each
# run starts a podman API service of its own.
set -euo pipefail

if command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null; then
  exit 0
fi
bash "$(dirname "$0")/../../deploy/apt-install.sh" "podman, runc and debootstrap" "podman.socket podman.service" \
  podman runc debootstrap
podman --version
