"""``make e2e-compose``: the end-to-end suite against the real compose deployment.

Brings ``deploy/docker-compose.yml`` up from images built from ``deploy/Dockerfile``, runs
``tests/e2e`` against its gateway, and tears it down — also when the suite fails, a step
fails or the run is interrupted. Every run has a compose project name of its own and free
host ports, so runs on one machine do not meet.

With a Docker engine (``docker info`` answers) the compose file is used as it is:
``up --build --wait``, and the suite reads metrics through the deployment's own Prometheus.

Without one, with podman (installed by ``install-tools.sh`` when missing), rootful and with
everything private to the run (``tests.containers.podman``): the images are built from a
Debian base made by debootstrap and kept in a cache with the built images, which ``make
e2e-k8s`` loads too (``tests.containers.images``; no registry is reachable),
compose's own ``build:`` is not used (it wants BuildKit), the Docker Compose v2 binary of the
virtualenv drives ``podman system service`` through ``DOCKER_HOST`` with an override for host
networking (``tests.containers.compose``), and the health checks podman does not run are run
here until the stack is healthy (``tests.containers.health``). Prometheus and Grafana are not
started: the suite runs its own Prometheus against the processes' ``/metrics``. On podman
the gateway reaches every backend over TLS with client certificates made for the run.

    python -m tests.containers.compose_e2e [pytest arguments]

    QUN_E2E_ENGINE          docker | podman (default: docker when ``docker info`` answers)
    QUN_E2E_CACHE           where the base image is kept between runs
    QUN_E2E_DEBIAN_MIRROR   Debian mirror for the base image (default: the machine's apt sources)
    QUN_E2E_UP_TIMEOUT      seconds for the stack to become healthy (default 300)
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tests.containers.compose import (
    COMPOSE_FILE,
    MONITORING,
    compose_binary,
    compose_model,
    container_ports,
    deployment_env,
    host_network_override,
    listening_ports,
    with_tls,
)
from tests.containers.health import HealthChecks, wait_healthy
from tests.containers.images import ROOT, prepared_images
from tests.containers.podman import Podman, install_tools
from tests.containers.shell import Interrupted, free_ports, log, run, unwind_on_signals
from tests.containers.suite import run_suite
from tests.support.certificates import write_certificates

UP_TIMEOUT = float(os.environ.get("QUN_E2E_UP_TIMEOUT", "300"))


def docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    return run(["docker", "info"], check=False, capture_output=True, timeout=60).returncode == 0


def with_docker(project: str, pytest_args: list[str]) -> int:
    """The compose file as it is, images built by compose. (Not exercised on machines without a
    Docker engine, where podman below is used instead.)"""
    gateway_port, prometheus_port, grafana_port, http_port = free_ports(4)
    image = f"qun-e2e:{project}"
    env = deployment_env(
        QUN_IMAGE=image,
        QUN_GATEWAY_PORT=str(gateway_port),
        QUN_GATEWAY_HTTP_PORT=str(http_port),
        QUN_PROMETHEUS_PORT=str(prometheus_port),
        QUN_GRAFANA_PORT=str(grafana_port),
    )
    compose = [compose_binary(), "--project-name", project, "--file", str(COMPOSE_FILE)]
    code = 1
    try:
        log(f"docker compose up (project {project})")
        run(
            [
                *compose,
                "--profile",
                "observability",
                "up",
                "--detach",
                "--build",
                "--wait",
                "--wait-timeout",
                str(int(UP_TIMEOUT)),
            ],
            env=env,
        )
        code = run_suite(
            f"127.0.0.1:{gateway_port}",
            env["QUN_TOKEN_SECRET"],
            pytest_args,
            QUN_E2E_PROMETHEUS_URL=f"http://127.0.0.1:{prometheus_port}",
            QUN_E2E_HTTP=f"http://127.0.0.1:{http_port}",
        )
    finally:
        if code != 0:
            run([*compose, "ps", "--all"], env=env, check=False)
            run([*compose, "logs", "--no-color", "--tail", "60"], env=env, check=False)
        log("docker compose down")
        run([*compose, "down", "--volumes", "--remove-orphans", "--timeout", "20"], env=env, check=False)
        run(["docker", "image", "rm", "--force", image], check=False, capture_output=True)
    return code


def with_podman(project: str, pytest_args: list[str]) -> int:
    install_tools()
    workdir = Path(tempfile.mkdtemp(prefix=f"{project}-"))
    # Host networking needs no network backend; CNI (what podman 4.3 picks when netavark is not
    # installed) keeps this run out of netavark's machine-wide state, which make e2e-k8s owns.
    podman = Podman(workdir, extra_conf='network_backend = "cni"\n')
    model = compose_model()
    services = [name for name in model["services"] if name not in MONITORING]
    health_checks: HealthChecks | None = None
    compose: list[str] = []
    env: dict[str, str] = {}
    code = 1
    try:
        qun_image, postgres_image = prepared_images(podman, workdir)

        ports = container_ports(model)
        port_map = dict(zip(ports, free_ports(len(ports)), strict=True))
        override = host_network_override(
            model, port_map, {"QUN_IMAGE": qun_image, "QUN_POSTGRES_IMAGE": postgres_image}
        )
        # The gateway reaches every backend over TLS with client certificates, as a production cluster may.
        certs = workdir / "certs"
        with_tls(override, model, certs, write_certificates(certs))
        override_file = workdir / "podman-host-network.yml"
        override_file.write_text(yaml.safe_dump(override, sort_keys=False))

        env = deployment_env(DOCKER_HOST=podman.start_service(), QUN_IMAGE=qun_image, QUN_POSTGRES_IMAGE=postgres_image)
        compose = [
            compose_binary(),
            "--project-name",
            project,
            "--file",
            str(COMPOSE_FILE),
            "--file",
            str(override_file),
        ]
        health_checks = HealthChecks(podman, project, listening_ports(override))
        health_checks.start()
        log(f"compose up (project {project}; podman, host network): {' '.join(services)}")
        run([*compose, "up", "--detach", "--no-build", "--pull", "never", *services], env=env, timeout=UP_TIMEOUT)
        wait_healthy(podman, project, model, services, UP_TIMEOUT)
        log("every service healthy, every one-shot job done")

        env_model = override["services"]
        code = run_suite(
            f"127.0.0.1:{env_model['gateway']['environment']['QUN_GRPC_PORT']}",
            env["QUN_TOKEN_SECRET"],
            pytest_args,
            QUN_E2E_METRICS_TARGETS=",".join(
                f"{name}=127.0.0.1:{service['environment']['QUN_METRICS_PORT']}"
                for name, service in env_model.items()
                if "QUN_METRICS_PORT" in service.get("environment", {})
            ),
            QUN_E2E_HTTP=f"http://127.0.0.1:{env_model['gateway']['environment']['QUN_HTTP_PORT']}",
        )
    finally:
        if health_checks:
            health_checks.stop()
        if compose:
            if code != 0:
                run([*compose, "ps", "--all"], env=env, check=False)
                run([*compose, "logs", "--no-color", "--tail", "60"], env=env, check=False)
            log("compose down")
            run(
                [*compose, "down", "--volumes", "--remove-orphans", "--timeout", "20"],
                env=env,
                check=False,
                timeout=180,
            )
        podman.teardown(project)
    return code


def main(argv: list[str]) -> int:
    os.chdir(ROOT)
    unwind_on_signals()
    project = f"qun-e2e-{os.getpid()}-{secrets.token_hex(3)}"
    engine = os.environ.get("QUN_E2E_ENGINE") or ("docker" if docker_engine() else "podman")
    log(f"engine {engine}, project {project}")
    try:
        code = with_docker(project, argv) if engine == "docker" else with_podman(project, argv)
    except (Interrupted, KeyboardInterrupt) as stop:
        log(f"interrupted ({str(stop) or 'SIGINT'})")
        return 130
    except (RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        log(f"failed: {error}")
        return 1
    log(f"done: {'passed' if code == 0 else f'failed (exit {code})'}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
