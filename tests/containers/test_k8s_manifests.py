"""The transform ``make e2e-k8s`` applies to the rendered manifests, offline: what it plays,
and the broken manifests it refuses before starting anything (a Service that reaches no pod,
a Service port that is not its pods' port)."""

from __future__ import annotations

import copy
import shutil
from typing import Any

import pytest

from deploy.topology import processes
from tests.containers.k8s_e2e import GATEWAY, OVERLAY, check_replicas, secret_json, secret_values
from tests.containers.k8s_manifests import ManifestError, plan, quantity, render, runtime_expectations


def deployment(name: str, port: int = 50053) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "server"}
    container = {
        "name": name,
        "image": "qun:dev",
        "ports": [{"name": "grpc", "containerPort": port}, {"name": "metrics", "containerPort": 9453}],
        "readinessProbe": {"grpc": {"port": port}, "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 2},
        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "qun-secrets", "key": "internal-token"}}}],
    }
    return {
        "kind": "Deployment",
        "metadata": {"name": f"qun-{name}"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "app.kubernetes.io/part-of": "qun"}},
                "spec": {"restartPolicy": "Always", "containers": [container]},
            },
        },
    }


def service(name: str, selector: dict[str, str], port: int = 50053, target: Any = "grpc") -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": "grpc", "port": port, "targetPort": target}]},
    }


GROUPS = {"app.kubernetes.io/name": "groups", "app.kubernetes.io/component": "server"}


def test_a_service_becomes_aliases_on_the_pods_it_selects() -> None:
    docs = [deployment("groups"), service("qun-groups", GROUPS), service("qun-groups-pods", GROUPS)]
    played = plan(docs)
    (groups,) = played.workloads
    assert groups.aliases == ["qun-groups", "qun-groups-pods"]
    assert groups.pods == ["qun-groups-pod-0", "qun-groups-pod-1"]
    assert [(p.kind, p.port, p.budget) for p in groups.probes] == [("readinessProbe", 50053, 10.0)]
    assert played.secrets == {"qun-secrets": {"internal-token"}}
    # Played with OnFailure, and without ports podman would publish on the host.
    spec = groups.manifest["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "OnFailure"
    assert "ports" not in spec["containers"][0]
    assert docs[0]["spec"]["template"]["spec"]["restartPolicy"] == "Always", "the rendered document is not changed"


def test_a_service_whose_selector_matches_nothing_fails_the_run() -> None:
    typo = {**GROUPS, "app.kubernetes.io/name": "group"}
    with pytest.raises(ManifestError, match="qun-groups-pods: its selector .* matches no pod"):
        plan([deployment("groups"), service("qun-groups-pods", typo)])


def test_a_service_port_that_is_not_the_container_port_fails_the_run() -> None:
    with pytest.raises(ManifestError, match="port 50063 → targetPort 'grpc' is container port 50053"):
        plan([deployment("groups"), service("qun-groups", GROUPS, port=50063)])
    with pytest.raises(ManifestError, match="targetPort 'grcp' names no container port"):
        plan([deployment("groups"), service("qun-groups", GROUPS, target="grcp")])
    with pytest.raises(ManifestError, match="targetPort 50054 is container port 50054"):
        plan([deployment("groups"), service("qun-groups", GROUPS, target=50054)])


def test_a_job_is_played_as_a_pod_of_its_template() -> None:
    template = copy.deepcopy(deployment("groups")["spec"]["template"])
    template["spec"]["restartPolicy"] = "Never"
    job = {"kind": "Job", "metadata": {"name": "qun-groups-migrate"}, "spec": {"template": template}}
    (pod,) = plan([job]).jobs
    assert pod["kind"] == "Pod" and pod["metadata"]["name"] == "qun-groups-migrate"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_kinds_podman_cannot_play_are_refused_not_skipped() -> None:
    with pytest.raises(ManifestError, match="StatefulSet/db: a kind this harness does not play"):
        plan([{"kind": "StatefulSet", "metadata": {"name": "db"}}])
    other_probe = deployment("groups")
    other_probe["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 50053}}
    with pytest.raises(ManifestError, match="only grpc probes"):
        plan([other_probe])


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl renders the overlay")
def test_the_overlay_plays_two_replicas_of_every_backend_with_the_run_image() -> None:
    played = plan(render(OVERLAY))
    check_replicas(played)
    assert {w.name for w in played.workloads} == {p.k8s_name for p in processes()}
    assert played.images == {"localhost/qun-e2e:k8s"}
    assert {job["metadata"]["name"] for job in played.jobs} == {
        f"{p.k8s_name}-migrate" for p in processes() if p.database
    }
    for workload in played.workloads:
        assert workload.aliases == [workload.name, f"{workload.name}-pods"]
        assert {p.kind for p in workload.probes} == {"startupProbe", "readinessProbe", "livenessProbe"}
    assert played.workload(GATEWAY).replicas == 1
    secret_json(played, secret_values("password"))  # every key the pods read is one the run creates


def test_what_a_runtime_must_apply_for_a_security_context_and_limits() -> None:
    assert (quantity("512Mi"), quantity("500m"), quantity("1"), quantity("1G")) == (2**29, 0.5, 1.0, 1e9)
    pod_spec = {"securityContext": {"runAsUser": 10001, "runAsGroup": 10001}}
    container = {
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
    }
    assert runtime_expectations(pod_spec, container) == {
        "user": "10001:10001",
        "read_only_root": True,
        "no_new_privileges": True,
        "capabilities": [],
        "memory": 2**28,
        "cpus": 0.5,
    }
    assert runtime_expectations({}, {}) == {}


def test_a_network_policy_is_not_played_but_must_select_pods() -> None:
    groups = deployment("groups")
    policy = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "qun-groups"},
        "spec": {"podSelector": {"matchLabels": dict(groups["spec"]["template"]["metadata"]["labels"])}},
    }
    assert "NetworkPolicy/qun-groups" in plan([groups, policy]).not_played
    policy["spec"]["podSelector"]["matchLabels"] = {"app.kubernetes.io/name": "qun-nothing"}
    with pytest.raises(ManifestError, match="matches no Deployment's pods"):
        plan([groups, policy])
