"""``make e2e-k8s``: the Kubernetes manifests run for real, two replicas of every backend.

``kubectl kustomize tests/containers/k8s-e2e`` renders ``deploy/k8s`` with the image built for
the run and two replicas per backend; ``podman kube play`` (4.3, rootful, everything private to
the run) plays the result, transformed where podman differs from a cluster
(``tests.containers.k8s_manifests``), on a podman network with DNS inside a network namespace
of the run's own (``tests.containers.netns``):

1. the images from the cache ``make e2e-compose`` fills, or built and put there
   (``tests.containers.images``);
2. the Secret the pods reference, from JSON (``podman secret create``), with database URLs
   pointing at a PostgreSQL fixture pod (the external database: listening on all addresses,
   its hba admitting the pod network), one database per service;
3. each migration Job's pod template as a Pod, which must exit 0 before any Deployment starts
   (the init containers ``wait-migrated`` would wait otherwise);
4. each Deployment, ``replicas`` pods, with its Services' names as network aliases — so
   ``qun-groups-pods`` resolves to both groups pods, as a headless Service does;
5. every ``grpc`` startup, readiness and liveness probe, run as the kubelet would
   (``tests.containers.probes``), must answer SERVING;
6. ``tests/e2e`` through the gateway pod, with its own Prometheus scraping every pod;
7. the replicas share the calls, and a groups pod killed mid-run loses no acknowledged join
   (``tests.containers.replicas``).

Everything is torn down in ``finally`` — pods, storage, network, namespace, netavark's state —
also when a step fails or the run is interrupted; pytest's exit code is passed through.

    python -m tests.containers.k8s_e2e [pytest arguments]

    QUN_E2E_K8S_OVERLAY     the kustomization to render (default tests/containers/k8s-e2e)
    QUN_E2E_CACHE           where the base image and the built images are kept between runs
    QUN_E2E_UP_TIMEOUT      seconds for each step of bringing it up (default 300)
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from deploy.topology import NAME_PREFIX, SECRET_NAME, processes
from tests.containers.images import ROOT, prepared_images
from tests.containers.k8s_manifests import ManifestError, Plan, Workload, plan, render, runtime_expectations
from tests.containers.netns import NetworkNamespace, one_run_at_a_time, remove_netavark_state
from tests.containers.podman import HERE, Podman, install_tools
from tests.containers.probes import plan_entry
from tests.containers.shell import Interrupted, log, unwind_on_signals
from tests.containers.suite import run_suite

OVERLAY = HERE / "k8s-e2e"
UP_TIMEOUT = float(os.environ.get("QUN_E2E_UP_TIMEOUT", "300"))
GATEWAY = f"{NAME_PREFIX}gateway"
KILLED = f"{NAME_PREFIX}groups"  # the backend one of whose pods is killed mid-run
# The external database, as the Secret's URLs name it.
DB_HOST, DB_USER, DB_ADMIN_DB = "qun-postgres", "qun", "qun"
POSTGRES_POD = "qun-e2e-postgres"
HBA_MOUNT = "/etc/qun-e2e-postgres"
NETAVARK = 'network_backend = "netavark"\n'


# --- what the run creates beside the manifests -------------------------------------------------


def secret_values(db_password: str) -> dict[str, str]:
    """Every key of ``qun-secrets`` an operator creates (README, Kubernetes)."""
    values = {"internal-token": secrets.token_hex(32), "token-secret": secrets.token_hex(32)}
    for process in processes():
        if process.database:
            values[process.database_secret_key] = (
                f"postgresql://{DB_USER}:{db_password}@{DB_HOST}:5432/{process.database_name}"
            )
    return values


def secret_json(the_plan: Plan, values: dict[str, str]) -> str:
    """What ``podman secret create`` reads for ``kube play``: a JSON map of key to base64 value.
    A Secret or key the pods reference that an operator would not have created is an error."""
    unknown = {name for name in the_plan.secrets if name != SECRET_NAME}
    if unknown:
        raise ManifestError(f"the pods reference Secrets {sorted(unknown)}; only {SECRET_NAME} is created")
    missing = the_plan.secrets.get(SECRET_NAME, set()) - set(values)
    if missing:
        raise ManifestError(f"the pods read {SECRET_NAME} keys nobody creates: {sorted(missing)}")
    return json.dumps({key: base64.b64encode(value.encode()).decode() for key, value in values.items()})


def postgres_fixture(image: str, password: str, subnet: str) -> list[dict[str, Any]]:
    """The external database: the stand-in image's PostgreSQL listening on every address, with
    an hba file (a ConfigMap) admitting password logins from the pod network."""
    hba = f"local all all trust\nhost all all {subnet} scram-sha-256\n"
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{POSTGRES_POD}-hba"},
            "data": {"pg_hba.conf": hba},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": POSTGRES_POD, "labels": {"app.kubernetes.io/name": POSTGRES_POD}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "postgres",
                        "image": image,
                        "args": ["postgres", "-c", "listen_addresses=*", "-c", f"hba_file={HBA_MOUNT}/pg_hba.conf"],
                        "env": [
                            {"name": "POSTGRES_USER", "value": DB_USER},
                            {"name": "POSTGRES_PASSWORD", "value": password},
                            {"name": "POSTGRES_DB", "value": DB_ADMIN_DB},
                        ],
                        "volumeMounts": [{"name": "hba", "mountPath": HBA_MOUNT, "readOnly": True}],
                    }
                ],
                "volumes": [{"name": "hba", "configMap": {"name": f"{POSTGRES_POD}-hba"}}],
            },
        },
    ]


def check_replicas(the_plan: Plan) -> None:
    """The overlay's promise: every backend plays at least two replicas."""
    few = [w.name for w in the_plan.workloads if w.name != GATEWAY and w.replicas < 2]
    if few:
        raise ManifestError(f"the overlay plays fewer than two replicas of {few}")


# --- the run -----------------------------------------------------------------------------------


class K8sRun:
    """One run's podman, network and pods; ``up`` plays them, ``teardown`` removes them."""

    def __init__(self, project: str, the_plan: Plan, netns: NetworkNamespace) -> None:
        self.project, self.plan, self.netns = project, the_plan, netns
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{project}-"))
        self.podman = Podman(self.workdir, extra_conf=NETAVARK, prefix=netns.prefix)
        self.network = project
        self.addresses: dict[str, str] = {}  # pod → its address on the network
        self.token_secret = ""

    def write(self, name: str, docs: list[dict[str, Any]]) -> Path:
        path = self.workdir / name
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return path

    def play(self, path: Path, aliases: Sequence[str] = ()) -> subprocess.Popen[str]:
        """``podman kube play`` of ``path`` on the run's network, the pods named also ``aliases``
        there; started, not waited for (``finish``)."""
        network = self.network + (":" + ",".join(f"alias={a}" for a in aliases) if aliases else "")
        configmaps = self.workdir / "configmaps.yaml"
        return subprocess.Popen(
            [*self.podman.prefix, "podman", "kube", "play", "--network", network, "--configmap", str(configmaps)]
            + [str(path)],
            env=self.podman.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finish(self, plays: dict[str, subprocess.Popen[str]]) -> None:
        failed = []
        for what, process in plays.items():
            try:
                output, _ = process.communicate(timeout=UP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
                failed.append(f"kube play {what}: no answer after {UP_TIMEOUT:.0f}s\n{output}")
                continue
            if process.returncode != 0:
                failed.append(f"kube play {what}: exit {process.returncode}\n{output}")
        if failed:
            raise RuntimeError("\n".join(failed))

    def address(self, container: str) -> str:
        """The address of the pod ``container`` belongs to, on the run's network."""
        inspected = json.loads(self.podman("inspect", container))[0]
        return str(inspected["NetworkSettings"]["Networks"][self.network]["IPAddress"])

    def succeeds(self, *args: str) -> bool:
        try:
            self.podman(*args, timeout=30)
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return True

    def exit_code(self, container: str) -> int:
        out = self.podman("wait", container, timeout=UP_TIMEOUT)
        return int(out.split()[-1])

    def up(self) -> None:
        podman = self.podman
        qun_image, postgres_image = prepared_images(podman, self.workdir)
        for name in sorted(self.plan.images):
            podman("tag", qun_image, name)  # what the overlay names the image

        podman("network", "create", self.network)
        subnet = json.loads(podman("network", "inspect", self.network))[0]["subnets"][0]["subnet"]
        log(f"network {self.network} ({subnet}) in namespace {self.netns.name}")

        db_password = secrets.token_hex(16)
        values = secret_values(db_password)
        self.token_secret = values["token-secret"]
        secret_file = self.workdir / "secret.json"
        secret_file.touch(mode=0o600)
        secret_file.write_text(secret_json(self.plan, values))
        podman("secret", "create", SECRET_NAME, str(secret_file))
        secret_file.unlink()
        self.write("configmaps.yaml", self.plan.configmaps)

        log("PostgreSQL fixture pod (the external database)")
        self.finish(
            {
                POSTGRES_POD: self.play(
                    self.write("postgres.yaml", postgres_fixture(postgres_image, db_password, subnet)), [DB_HOST]
                )
            }
        )
        db = f"{POSTGRES_POD}-postgres"
        db_address = self.address(db)
        deadline = time.monotonic() + UP_TIMEOUT
        while not self.succeeds("exec", db, "pg_isready", "-q", "-h", db_address):  # over the pod network
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL not accepting connections on {db_address} after {UP_TIMEOUT:.0f}s")
            time.sleep(0.5)
        for process in processes():
            if process.database:
                podman(
                    "exec",
                    db,
                    "psql",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-q",
                    "-U",
                    DB_USER,
                    "-d",
                    DB_ADMIN_DB,
                    "-c",
                    f'CREATE DATABASE "{process.database_name}"',
                )

        jobs = [job["metadata"]["name"] for job in self.plan.jobs]
        log(f"migration Jobs as pods: {' '.join(jobs)}")
        self.finish({"jobs": self.play(self.write("jobs.yaml", self.plan.jobs))})
        failed = []
        for job in self.plan.jobs:
            for container in job["spec"]["containers"]:
                name = f"{job['metadata']['name']}-{container['name']}"
                code = self.exit_code(name)
                if code != 0:
                    failed.append(f"{name} exited {code}:\n{podman('logs', '--tail', '30', name, check=False)}")
        if failed:
            raise RuntimeError("a migration Job failed:\n" + "\n".join(failed))
        log("every migration Job exited 0")

        order = sorted(self.plan.workloads, key=lambda w: w.name == GATEWAY)  # backends first
        log("Deployments: " + ", ".join(f"{w.name} ×{w.replicas} (aliases {', '.join(w.aliases)})" for w in order))
        self.finish({w.name: self.play(self.write(f"{w.name}.yaml", [w.manifest]), w.aliases) for w in order})
        for workload in order:
            container = workload.containers()[0]
            for pod in workload.pods:
                self.addresses[pod] = self.address(f"{pod}-{container}")
        log("pods: " + ", ".join(f"{pod} {address}" for pod, address in self.addresses.items()))

    def check_pod_specs(self) -> None:
        """What podman applied to every serving container, against its manifest: the security
        context (user, read-only root, no privilege escalation, no capabilities) and limits."""
        expected = {
            f"{pod}-{container['name']}": runtime_expectations(w.manifest["spec"]["template"]["spec"], container)
            for w in self.plan.workloads
            for pod in w.pods
            for container in w.manifest["spec"]["template"]["spec"]["containers"]
        }
        problems = []
        for entry in json.loads(self.podman("inspect", *expected)):
            host = entry["HostConfig"]
            quota, period = host.get("CpuQuota") or 0, host.get("CpuPeriod") or 0
            applied = {
                "user": entry["Config"].get("User", ""),
                "read_only_root": bool(host.get("ReadonlyRootfs")),
                "no_new_privileges": "no-new-privileges" in (host.get("SecurityOpt") or []),
                "capabilities": sorted(entry.get("EffectiveCaps") or []),
                "memory": host.get("Memory", 0),
                "cpus": quota / period if period else 0.0,
            }
            name = entry["Name"]
            problems += [
                f"{name} {key}: manifest {value!r}, applied {applied[key]!r}"
                for key, value in expected[name].items()
                if applied[key] != value
            ]
        if problems:
            raise RuntimeError("podman did not apply the pod specs:\n  " + "\n  ".join(problems))
        keys = sorted({key for wanted in expected.values() for key in wanted})
        log(f"pod specs applied on {len(expected)} containers: {', '.join(keys)}")

    def probe(self) -> None:
        targets = [
            plan_entry(pod, self.addresses[pod], workload.probes)
            for workload in self.plan.workloads
            for pod in workload.pods
            if workload.probes
        ]
        path = self.workdir / "probes.json"
        path.write_text(json.dumps(targets))
        count = sum(len(t["probes"]) for t in targets)
        log(f"{count} grpc probes on {len(targets)} pods")
        result = subprocess.run(
            [*self.netns.prefix, sys.executable, "-m", "tests.containers.probes", str(path)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        print(result.stdout + result.stderr, end="", flush=True)
        if result.returncode != 0:
            raise RuntimeError("a probe did not answer SERVING")

    def endpoint(self, workload: Workload, pod: str, port: str) -> str:
        return f"{self.addresses[pod]}:{workload.ports[port]}"

    def metrics_targets(self) -> dict[str, list[str]]:
        """Process name → each of its pods' /metrics host:port."""
        return {
            w.labels.get("app.kubernetes.io/name", w.name): [self.endpoint(w, pod, "metrics") for pod in w.pods]
            for w in self.plan.workloads
        }

    def gateway(self) -> str:
        workload = self.plan.workload(GATEWAY)
        return self.endpoint(workload, workload.pods[0], "grpc")

    def gateway_http(self) -> str:
        workload = self.plan.workload(GATEWAY)
        return f"http://{self.endpoint(workload, workload.pods[0], 'http')}"

    def memory(self) -> str:
        """Memory in use by the run's containers, per Deployment (all its pods) and in all."""
        try:
            stats = json.loads(self.podman("stats", "--no-stream", "--format", "json", timeout=60))
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
            return f"unknown ({error})"
        per: dict[str, float] = {}
        for entry in stats:
            used = parse_size(str(entry.get("mem_usage", "0B")).split("/")[0])
            name = str(entry.get("name", ""))
            owner = "pause" if name.endswith("-infra") else re.sub(r"-pod-\d+-[^-]+$", "", name)
            if used:
                per[owner] = per.get(owner, 0) + used
        parts = ", ".join(f"{name} {size / 2**20:.0f}" for name, size in sorted(per.items(), key=lambda i: -i[1]))
        return f"{sum(per.values()) / 2**30:.2f} GiB (MiB: {parts})"

    def replicas(self) -> int:
        killed = self.plan.workload(KILLED)
        metrics = self.metrics_targets()
        args = [f"--gateway={self.gateway()}", f"--kill={killed.pods[-1]}-{killed.containers()[0]}"]
        args += [f"--metrics={name}={','.join(metrics[name])}" for name in ("groups", "campaigns")]
        log("replicas: calls spread, a groups pod killed mid-run")
        return subprocess.run(
            [*self.netns.prefix, sys.executable, "-m", "tests.containers.replicas", *args],
            cwd=ROOT,
            env=dict(self.podman.env, QUN_E2E_TOKEN_SECRET=self.token_secret),
            stdin=subprocess.DEVNULL,
        ).returncode

    def diagnostics(self) -> None:
        listed = self.podman("ps", "--all", "--format", "{{.Names}}\t{{.Status}}", check=False, timeout=60)
        print(listed, flush=True)
        for line in listed.splitlines():
            name = line.split("\t")[0]
            if name and not name.endswith("-infra"):
                print(f"--- {name}\n{self.podman('logs', '--tail', '15', name, check=False, timeout=60)}", flush=True)

    def teardown(self) -> None:
        """Every pod stopped at once (SIGTERM, ``--time`` for the drain), then all removed."""
        pods = self.podman("pod", "ps", "--quiet", check=False, timeout=60).split()
        log(f"teardown: stopping {len(pods)} pods")
        stops = [
            subprocess.Popen(
                [*self.podman.prefix, "podman", "pod", "stop", "--time", "10", pod],
                env=self.podman.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pod in pods
        ]
        for stop in stops:
            try:
                stop.wait(60)
            except subprocess.TimeoutExpired:
                stop.kill()
                stop.wait()
        self.podman("pod", "rm", "--all", "--force", "--time", "0", check=False, timeout=180)
        self.podman("network", "rm", "--force", self.network, check=False, timeout=60)
        self.podman.teardown()


def parse_size(text: str) -> float:
    """Bytes from podman's human sizes ("52.74MB", "1.2GiB", "0B")."""
    found = re.fullmatch(r"\s*([\d.]+)\s*([kKMGT]?i?B)\s*", text)
    if not found:
        return 0.0
    units = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
    units.update({"KiB": 2**10, "kiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40})
    return float(found[1]) * units.get(found[2], 1)


def run(project: str, overlay: Path, pytest_args: list[str]) -> int:
    install_tools(k8s=True)
    if not shutil.which("kubectl"):
        raise RuntimeError("kubectl (with kustomize) is needed to render the manifests")
    the_plan = plan(render(overlay))  # a broken manifest fails here, before any image is made
    check_replicas(the_plan)
    kinds = sorted({name.split("/")[0] for name in the_plan.not_played})
    log(f"rendered {overlay}; not played (podman has no such thing): {', '.join(kinds)}")
    with one_run_at_a_time():
        netns = NetworkNamespace()
        k8s = K8sRun(project, the_plan, netns)
        code = 1
        try:
            k8s.up()
            k8s.check_pod_specs()
            log(f"memory after start: {k8s.memory()}")
            k8s.probe()
            log("every probe answered SERVING")
            code = run_suite(
                k8s.gateway(),
                k8s.token_secret,
                pytest_args,
                prefix=netns.prefix,
                QUN_E2E_METRICS_TARGETS=",".join(
                    f"{name}={address}" for name, addresses in k8s.metrics_targets().items() for address in addresses
                ),
                QUN_E2E_HTTP=k8s.gateway_http(),
            )
            log(f"memory after the suite: {k8s.memory()}")
            if code == 0:
                code = 1 if k8s.replicas() != 0 else 0
        finally:
            try:
                if code != 0:
                    k8s.diagnostics()
                k8s.teardown()
            finally:
                netns.delete()
                remove_netavark_state(k8s.network)
    return code


def main(argv: list[str]) -> int:
    os.chdir(ROOT)
    unwind_on_signals()
    project = f"qun-k8s-{os.getpid()}-{secrets.token_hex(3)}"
    overlay = Path(os.environ.get("QUN_E2E_K8S_OVERLAY") or OVERLAY)
    log(f"podman kube play, project {project}")
    try:
        code = run(project, overlay, argv)
    except (Interrupted, KeyboardInterrupt) as stop:
        log(f"interrupted ({str(stop) or 'SIGINT'})")
        return 130
    except (ManifestError, RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        log(f"failed: {error}")
        return 1
    log(f"done: {'passed' if code == 0 else f'failed (exit {code})'}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
