"""Offline checks of deploy/: the files agree with the code that reads them."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import compose as compose_package
import pytest

from deploy.topology import Process, processes

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
COMPOSE_BIN = Path(compose_package.__file__).parent / "docker-compose"

# Stand-ins for the variables compose requires; long enough for the services' own checks.
REQUIRED_ENV = {
    "QUN_POSTGRES_PASSWORD": "check-password",
    "QUN_INTERNAL_TOKEN": "check-internal-token-0123456789",
    "QUN_TOKEN_SECRET": "check-token-secret-0123456789",
    "QUN_GRAFANA_ADMIN_PASSWORD": "check-grafana",
}


def run_compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The Docker Compose v2 binary itself (its pip wrapper script loses the exit code)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("QUN_")}
    return subprocess.run(
        [str(COMPOSE_BIN), "-f", str(COMPOSE_FILE), *args],
        check=False,
        env={**base, **(env if env is not None else REQUIRED_ENV)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@cache
def resolved_compose() -> dict[str, Any]:
    """The compose model as compose itself resolves it (variables interpolated), every profile on."""
    result = run_compose("--profile", "observability", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def compose_model() -> dict[str, Any]:
    return resolved_compose()


@pytest.fixture(scope="session")
def procs() -> list[Process]:
    return processes()
