"""podman with configuration, storage and state private to one run, and its teardown.

podman 4.3 from Debian, rootful, without systemd: runc is the runtime that works here, the
host's ulimits are too high for it to hand on, and there is no systemd for cgroups or the
journal. Everything the run makes lives under its own folder, removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.containers.shell import log, remove_tree, run

HERE = Path(__file__).resolve().parent
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def install_tools(k8s: bool = False) -> None:
    """podman, runc and debootstrap from Debian's packages when one is missing (``install-tools.sh``);
    with ``k8s``, also netavark, aardvark-dns (a network with DNS) and catatonit (podman's pause image)."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if not shutil.which(tool)]
    if k8s:
        helpers = {"netavark": "/usr/lib/podman/netavark", "aardvark-dns": "/usr/lib/podman/aardvark-dns"}
        missing += [tool for tool, path in helpers.items() if not os.access(path, os.X_OK)]
        missing += [] if shutil.which("catatonit") else ["catatonit"]
    if missing:
        log(f"installing {' '.join(missing)}")
        run(["bash", str(HERE / "install-tools.sh"), *(["k8s"] if k8s else [])])


class Podman:
    """podman with configuration, storage and state private to one run, under ``workdir``."""

    def __init__(self, workdir: Path, extra_conf: str = "", prefix: tuple[str, ...] = ()) -> None:
        """``prefix`` goes before every ``podman`` this object runs (``nsenter --net=…``: the
        run's own network namespace); image builds, which need the machine's network, run
        without it."""
        self.workdir = workdir
        self.prefix = prefix
        self.socket = workdir / "podman.sock"
        self.service: subprocess.Popen[bytes] | None = None
        containers_conf = workdir / "containers.conf"
        storage_conf = workdir / "storage.conf"
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
            f'network_config_dir = "{workdir}/networks"\n' + extra_conf
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
        result = run(
            [*self.prefix, "podman", *args], env=self.env, check=False, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}")
        return str(result.stdout)

    def containers(self, project: str) -> list[dict[str, Any]]:
        ids = self("ps", "--all", "--quiet", "--filter", f"label={PROJECT_LABEL}={project}").split()
        return list(json.loads(self("inspect", *ids))) if ids else []

    def start_service(self) -> str:
        """The API service compose talks to; answers its ``DOCKER_HOST``."""
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

    def teardown(self, project: str = "") -> None:
        """Whatever was left (containers outlive a killed API service), the service, the storage."""
        if project:
            with contextlib.suppress(Exception):
                leftovers = self("ps", "--all", "--quiet", "--filter", f"label={PROJECT_LABEL}={project}").split()
                if leftovers:
                    log(f"removing {len(leftovers)} containers left behind")
                    self("rm", "--force", "--volumes", "--time", "5", *leftovers, check=False)
                volumes = self("volume", "ls", "--quiet", "--filter", f"label={PROJECT_LABEL}={project}").split()
                if volumes:
                    self("volume", "rm", "--force", *volumes, check=False)
        self.stop_service()
        # A build interrupted in a RUN step leaves its container's state with runc.
        with contextlib.suppress(Exception):
            listed = run(["runc", "list", "--format", "json"], capture_output=True, text=True, timeout=30).stdout
            for container in json.loads(listed or "[]") or []:
                if container.get("bundle", "").startswith(f"{self.workdir}/"):
                    run(["runc", "delete", "--force", container["id"]], check=False, timeout=30)
        # Storage private to this run: reset it (unmounts what podman mounted), then remove it all.
        with contextlib.suppress(Exception):
            self("system", "reset", "--force", check=False, timeout=120)
        remove_tree(self.workdir)
        log("torn down")
