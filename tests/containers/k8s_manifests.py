"""The rendered Kubernetes manifests, turned into what ``podman kube play`` (4.3) can run.

The manifests are never edited: ``kubectl kustomize`` renders them (through an overlay), and
this module transforms that output, checking on the way what Kubernetes would resolve and
podman does not:

- a Deployment is played as it is but for ``restartPolicy: OnFailure`` (under ``Always``,
  podman 4.3 restarts finished init containers and ``kube play`` fails) and its containers'
  ``ports`` (podman 4.3 publishes each ``containerPort`` on the host, so a second replica could
  not bind it; Kubernetes publishes nothing). The ports are read before, for the checks below;
- each Job's pod template becomes a Pod that must exit 0 (``kube play`` ignores a Job in a
  file with other documents);
- each Service becomes network aliases on the pods its selector matches (``kube play``
  ignores Services). With no kube-proxy between, a client reaches the pod itself at the
  Service's port, so a Service whose selector matches no Deployment, or whose port is not the
  container port its ``targetPort`` names, is an error here, as it would be a broken Service
  there;
- the Secrets the pods reference are listed, to be created with ``podman secret create``;
- every ``grpc`` startup, readiness and liveness probe is listed for the prober
  (``tests.containers.probes``): podman runs none of them.

HorizontalPodAutoscalers, PodDisruptionBudgets and the Namespace are not played; nor are
NetworkPolicies, which podman does not enforce, though each must select pods a Deployment
makes (a policy selecting nothing protects nothing). Any other kind is an error rather than
silently skipped.
"""

from __future__ import annotations

import copy
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NOT_PLAYED = {"Namespace", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


class ManifestError(Exception):
    """The rendered manifests would not run as written (a Service that reaches nothing …)."""


@dataclass(frozen=True)
class Probe:
    """A ``grpc`` probe as the kubelet runs it: ``grpc.health.v1.Health/Check`` on the pod's
    address and ``port`` for ``service``, every ``period`` seconds with ``timeout``, failed
    after ``failure_threshold`` attempts in a row."""

    container: str
    kind: str  # startupProbe | readinessProbe | livenessProbe
    port: int
    service: str
    period: float
    timeout: float
    failure_threshold: int
    initial_delay: float

    @property
    def budget(self) -> float:
        """How long the kubelet lets it fail before acting: restarting, or not routing to it."""
        return self.initial_delay + self.period * self.failure_threshold


@dataclass
class Workload:
    """A Deployment as podman plays it: ``replicas`` pods named ``<name>-pod-<i>``."""

    name: str
    replicas: int
    manifest: dict[str, Any]  # the Deployment to play
    labels: dict[str, str]  # its pods' labels
    aliases: list[str] = field(default_factory=list)  # the Services that select its pods
    ports: dict[str, int] = field(default_factory=dict)  # port name → container port
    probes: list[Probe] = field(default_factory=list)

    @property
    def pods(self) -> list[str]:
        return [f"{self.name}-pod-{i}" for i in range(self.replicas)]

    def containers(self) -> list[str]:
        return [c["name"] for c in self.manifest["spec"]["template"]["spec"]["containers"]]


@dataclass
class Plan:
    configmaps: list[dict[str, Any]]
    jobs: list[dict[str, Any]]  # one Pod per Job, from its template
    workloads: list[Workload]
    secrets: dict[str, set[str]]  # Secret name → the keys the pods read
    images: set[str]
    not_played: list[str]  # "Kind/name" of what podman does not run

    def workload(self, name: str) -> Workload:
        for workload in self.workloads:
            if workload.name == name:
                return workload
        raise KeyError(name)


def render(overlay: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of ``overlay``: every document of the rendered output."""
    try:
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
        ).stdout
    except subprocess.CalledProcessError as error:
        raise ManifestError(f"kubectl kustomize {overlay}: {error.stderr.strip()}") from None
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _name(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [doc["spec"]["template"]["spec"]] if doc["kind"] in ("Deployment", "Job") else []


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _secret_refs(doc: dict[str, Any]) -> dict[str, set[str]]:
    """Secret name → keys, for every ``secretKeyRef``; other ways of reading a Secret are
    refused, since only env references are created for here."""
    refs: dict[str, set[str]] = {}
    for spec in _pod_specs(doc):
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                raise ManifestError(f"{_name(doc)}: Secret volumes are not played here (volume {volume['name']})")
        for container in _containers(spec):
            if any("secretRef" in source for source in container.get("envFrom", [])):
                raise ManifestError(f"{_name(doc)}: envFrom secretRef is not played here ({container['name']})")
            for var in container.get("env", []):
                ref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.setdefault(ref["name"], set()).add(ref["key"])
    return refs


def _probes(doc: dict[str, Any]) -> list[Probe]:
    found = []
    for container in doc["spec"]["template"]["spec"].get("containers", []):
        for kind in PROBES:
            probe = container.get(kind)
            if not probe:
                continue
            if "grpc" not in probe:
                raise ManifestError(f"{_name(doc)} {container['name']} {kind}: only grpc probes are run here")
            found.append(
                Probe(
                    container=container["name"],
                    kind=kind,
                    port=int(probe["grpc"]["port"]),
                    service=str(probe["grpc"].get("service", "")),
                    period=float(probe.get("periodSeconds", 10)),
                    timeout=float(probe.get("timeoutSeconds", 1)),
                    failure_threshold=int(probe.get("failureThreshold", 3)),
                    initial_delay=float(probe.get("initialDelaySeconds", 0)),
                )
            )
    return found


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity as a number: "512Mi" → 536870912, "500m" → 0.5, "1" → 1."""
    value = str(text)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}
    for suffix, factor in suffixes.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def runtime_expectations(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """What a runtime must apply to ``container`` for its security context and limits, in the
    terms ``podman inspect`` reports: user, read-only root, no privilege escalation, the
    capabilities left, memory bytes and CPUs. Only what the spec says is expected."""
    pod_context = pod_spec.get("securityContext") or {}
    context = container.get("securityContext") or {}
    expected: dict[str, Any] = {}
    user = context.get("runAsUser", pod_context.get("runAsUser"))
    group = context.get("runAsGroup", pod_context.get("runAsGroup"))
    if user is not None:
        expected["user"] = f"{user}:{group}" if group is not None else str(user)
    if "readOnlyRootFilesystem" in context:
        expected["read_only_root"] = bool(context["readOnlyRootFilesystem"])
    if context.get("allowPrivilegeEscalation") is False:
        expected["no_new_privileges"] = True
    capabilities = context.get("capabilities") or {}
    if "ALL" in capabilities.get("drop", []):
        expected["capabilities"] = sorted(f"CAP_{cap}" for cap in capabilities.get("add", []))
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        expected["memory"] = int(quantity(limits["memory"]))
    if "cpu" in limits:
        expected["cpus"] = quantity(limits["cpu"])
    return expected


def job_pod(job: dict[str, Any]) -> dict[str, Any]:
    """The Job's pod template as a Pod of the Job's name (what the Job controller would start)."""
    template = copy.deepcopy(job["spec"]["template"])
    metadata = {"name": job["metadata"]["name"], "labels": template.get("metadata", {}).get("labels", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def played_deployment(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Deployment as podman 4.3 can play it (see the module's docstring for why)."""
    played = copy.deepcopy(deployment)
    spec = played["spec"]["template"]["spec"]
    spec["restartPolicy"] = "OnFailure"
    for container in _containers(spec):
        container.pop("ports", None)
    return played


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _wire_services(services: list[dict[str, Any]], workloads: list[Workload]) -> None:
    """Each Service as aliases on the workloads it selects, its ports checked against theirs."""
    for service in services:
        name = service["metadata"]["name"]
        selector = service["spec"].get("selector") or {}
        if not selector:
            raise ManifestError(f"Service/{name} has no selector: nothing here would give it endpoints")
        selected = [w for w in workloads if _matches(selector, w.labels)]
        if not selected:
            raise ManifestError(
                f"Service/{name}: its selector {selector} matches no pod of any Deployment — "
                "it would have no endpoints, and nothing could reach it by its name"
            )
        for workload in selected:
            for port in service["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                if isinstance(target, str):
                    if target not in workload.ports:
                        raise ManifestError(
                            f"Service/{name} port {port['port']}: targetPort {target!r} names no container port "
                            f"of {workload.name} (it has {sorted(workload.ports)})"
                        )
                    container_port = workload.ports[target]
                else:
                    container_port = int(target)
                if container_port != int(port["port"]):
                    raise ManifestError(
                        f"Service/{name} port {port['port']} → targetPort {target!r} is container port "
                        f"{container_port} of {workload.name}: here a client reaches the pod itself by the "
                        "Service's name, so the two must be equal"
                    )
            workload.aliases.append(name)


def plan(docs: list[dict[str, Any]]) -> Plan:
    """What to play, in what shape, from the rendered documents; raises ``ManifestError``."""
    configmaps, jobs, workloads, services, policies, not_played = [], [], [], [], [], []
    secrets: dict[str, set[str]] = {}
    images: set[str] = set()
    for doc in docs:
        kind = doc.get("kind", "")
        if kind == "ConfigMap":
            configmaps.append(doc)
        elif kind == "Service":
            services.append(doc)
        elif kind == "Job":
            jobs.append(job_pod(doc))
        elif kind == "Deployment":
            template = doc["spec"]["template"]
            labels = dict(template.get("metadata", {}).get("labels", {}))
            selector = doc["spec"].get("selector", {}).get("matchLabels", {})
            if not _matches(selector, labels):
                raise ManifestError(f"{_name(doc)}: its selector {selector} does not match its own pods' labels")
            ports = {}
            for container in template["spec"].get("containers", []):
                for port in container.get("ports", []):
                    if "name" in port:
                        ports[port["name"]] = int(port["containerPort"])
            workloads.append(
                Workload(
                    name=doc["metadata"]["name"],
                    replicas=int(doc["spec"].get("replicas", 1)),
                    manifest=played_deployment(doc),
                    labels=labels,
                    ports=ports,
                    probes=_probes(doc),
                )
            )
        elif kind == "NetworkPolicy":
            policies.append(doc)
            not_played.append(_name(doc))
            continue
        elif kind in NOT_PLAYED:
            not_played.append(_name(doc))
            continue
        else:
            raise ManifestError(f"{_name(doc)}: a kind this harness does not play")
        for secret, keys in _secret_refs(doc).items():
            secrets.setdefault(secret, set()).update(keys)
        for spec in _pod_specs(doc):
            images.update(c["image"] for c in _containers(spec))
    _wire_services(services, workloads)
    for policy in policies:
        selector = policy["spec"].get("podSelector", {}).get("matchLabels", {})
        if not any(_matches(selector, w.labels) for w in workloads):
            raise ManifestError(f"{_name(policy)}: its podSelector {selector} matches no Deployment's pods")
    return Plan(configmaps, jobs, workloads, secrets, images, not_played)
