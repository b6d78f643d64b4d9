"""The end-to-end suite (``tests/e2e``) against a running deployment's gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.containers.images import ROOT
from tests.containers.shell import log

# What names the deployment to tests/e2e (its harness.py); set here, never inherited.
E2E_TARGET_VARIABLES = {
    "QUN_E2E_GATEWAY",
    "QUN_E2E_TOKEN_SECRET",
    "QUN_E2E_METRICS_TARGETS",
    "QUN_E2E_PROMETHEUS_URL",
    "QUN_E2E_HTTP",
}


def run_suite(
    gateway: str, token_secret: str, pytest_args: list[str], prefix: tuple[str, ...] = (), **e2e_env: str
) -> int:
    """pytest's exit code; ``prefix`` runs it somewhere else (``nsenter --net=…``: the gateway's
    address is on a network namespace of the run's own, and so are the metrics targets)."""
    log(f"tests/e2e against the gateway at {gateway}")
    env = {key: value for key, value in os.environ.items() if key not in E2E_TARGET_VARIABLES}
    env.update(QUN_E2E_GATEWAY=gateway, QUN_E2E_TOKEN_SECRET=token_secret, **e2e_env)
    suite = subprocess.Popen(
        [*prefix, sys.executable, "-m", "pytest", "tests/e2e", *pytest_args],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        return suite.wait()
    finally:
        if suite.poll() is None:
            # Interrupted: SIGINT lets pytest tear its fixtures down (the Prometheus it started).
            suite.send_signal(signal.SIGINT)
            try:
                suite.wait(30)
            except subprocess.TimeoutExpired:
                suite.kill()
                suite.wait()
