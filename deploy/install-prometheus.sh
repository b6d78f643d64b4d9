#!/usr/bin/env bash
# promtool and the Prometheus server from Debian's `prometheus` package, for `make deploy-check`
# and the end-to-end suite. Does nothing when both are on PATH. The package's own service is
# not started (qun's tests run their own Prometheus on a free port) and, under systemd, not enabled.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
bash "$(dirname "$0")/apt-install.sh" "promtool and prometheus" "prometheus.service" prometheus
promtool --version | head -n 1
