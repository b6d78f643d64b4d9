#!/usr/bin/env bash
# Debian's packages for the deployment harnesses on a machine without a Docker engine
# (tests/containers). Installs only what is missing:
#   install-tools.sh        podman, runc and debootstrap (make e2e-compose)
#   install-tools.sh k8s    and netavark, aardvark-dns and catatonit (make e2e-k8s: a podman
#                           network with DNS, and the pause image podman builds for pods)
# runc rather than crun: the runtime podman 4.3 runs containers with here. The packages' own
# services (podman.socket, podman.service) are not started, and under systemd not enabled: each
# run starts a podman API service of its own.
set -euo pipefail

packages=()
command -v podman >/dev/null || packages+=(podman)
command -v runc >/dev/null || packages+=(runc)
command -v debootstrap >/dev/null || packages+=(debootstrap)
if [ "${1:-}" = k8s ]; then
  # Not on PATH: podman looks for its helpers in its own folders.
  [ -x /usr/lib/podman/netavark ] || packages+=(netavark)
  [ -x /usr/lib/podman/aardvark-dns ] || packages+=(aardvark-dns)
  command -v catatonit >/dev/null || packages+=(catatonit)
fi
if [ "${#packages[@]}" -eq 0 ]; then
  exit 0
fi
bash "$(dirname "$0")/../../deploy/apt-install.sh" "${packages[*]}" "podman.socket podman.service" "${packages[@]}"
podman --version
