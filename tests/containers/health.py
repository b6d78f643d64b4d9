"""Health checks podman 4.3 does not run by itself (no systemd), and waiting for a healthy stack."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from typing import Any

from tests.containers.podman import SERVICE_LABEL, Podman
from tests.containers.shell import accepts_connections, log


class HealthChecks(threading.Thread):
    """Runs ``podman healthcheck run`` every second on each running container of the project
    whose health is not yet "healthy" (compose's ``service_healthy`` waits for them).

    A check costs a process in the container (a Python one for qun's), which on two cores slows
    the very start it waits for: so a service is checked only once its port (``ports``) takes
    connections, and no more once it is healthy."""

    def __init__(self, podman: Podman, project: str, ports: dict[str, int]) -> None:
        super().__init__(name="health-checks", daemon=True)
        self.podman, self.project, self.ports = podman, project, ports
        self.stopping = threading.Event()

    def due(self, container: dict[str, Any]) -> bool:
        if container["State"]["Status"] != "running" or health(container) in ("", "healthy"):
            return False
        port = self.ports.get(container["Config"]["Labels"].get(SERVICE_LABEL, ""))
        return port is None or accepts_connections(port)

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            with contextlib.suppress(Exception):
                pending = {
                    c["Config"]["Labels"].get(SERVICE_LABEL, c["Id"]): c["Id"]
                    for c in self.podman.containers(self.project)
                    if self.due(c)
                }
                checks = {
                    service: subprocess.Popen(
                        ["podman", "healthcheck", "run", cid],
                        env=self.podman.env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for service, cid in pending.items()
                }
                for service, check in checks.items():
                    try:
                        if check.wait(30) == 0:
                            log(f"{service} healthy")
                    except subprocess.TimeoutExpired:
                        check.kill()
                        check.wait()

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)


def health(container: dict[str, Any]) -> str:
    """The container's health: starting, healthy or unhealthy; empty without a health check."""
    state = container["State"]
    found = state.get("Health") or state.get("Healthcheck") or {}
    return str(found.get("Status", "")) if container["Config"].get("Healthcheck") else ""


def wait_healthy(podman: Podman, project: str, model: dict[str, Any], services: list[str], timeout: float) -> None:
    """Every one-shot job exited 0; every other service runs and, with a health check, is healthy."""
    deadline = time.monotonic() + timeout
    while True:
        by_service = {c["Config"]["Labels"].get(SERVICE_LABEL): c for c in podman.containers(project)}
        waiting, failed = [], []
        for name in services:
            container = by_service.get(name)
            one_shot = model["services"][name].get("restart") == "no"
            if container is None:
                waiting.append(f"{name}: no container")
            elif one_shot:
                status, code = container["State"]["Status"], container["State"]["ExitCode"]
                if status == "exited" and code != 0:
                    failed.append(f"{name} exited {code}")
                elif status != "exited":
                    waiting.append(f"{name}: {status}")
            elif container["State"]["Status"] != "running":
                failed.append(f"{name}: {container['State']['Status']} (exit {container['State']['ExitCode']})")
            elif health(container) not in ("", "healthy"):
                waiting.append(f"{name}: {health(container)}")
        if failed:
            raise RuntimeError("the deployment did not come up: " + "; ".join(failed))
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not healthy after {timeout:.0f}s: " + "; ".join(waiting))
        time.sleep(1)
