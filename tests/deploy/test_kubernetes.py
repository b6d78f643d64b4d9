"""deploy/k8s: every process has its Deployment, Services, autoscaler, disruption budget and (with a
database) migration Job, and they agree with the settings each process reads.

Schema validation (`kubernetes-validate --strict`) runs in `make deploy-check`.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deploy.entrypoint import resolve
from deploy.topology import RULES_CONFIGMAP, RULES_FILE, RULES_MOUNT, SECRET_NAME, Process
from gateway.settings import load_gateway_settings
from services.common.processes import PROCESSES
from services.common.rules import load_rules
from services.common.settings import SettingsError, load_settings
from tests.deploy.conftest import DEPLOY

K8S = DEPLOY / "k8s"
SECRET_VARS = {"QUN_INTERNAL_TOKEN", "QUN_TOKEN_SECRET", "QUN_DATABASE_URL"}


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in found, f"{key} defined twice"
                found[key] = doc
    return found


def pod_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment with Secret references replaced by stand-in values."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET_NAME and not ref.get("optional"), var["name"]
            key = ref["key"]
            env[var["name"]] = (
                f"postgresql://qun:x@db:5432/{key}"
                if key.endswith("database-url")
                else f"stand-in-for-{key}-0123456789"
            )
        else:
            assert var["name"] not in SECRET_VARS, f"{var['name']} must come from the Secret, not inline"
            env[var["name"]] = var["value"]
    return env


def test_every_process_of_the_local_stack_is_deployed(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployed = {
        doc["metadata"]["labels"]["app.kubernetes.io/name"]
        for (kind, _), doc in objects.items()
        if kind == "Deployment"
    }
    assert deployed == set(PROCESSES), "run `make deploy-render`"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert kustomization["namespace"] == "qun"


def test_no_secret_is_shipped(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert not [name for kind, name in objects if kind == "Secret"], "Secrets are created by the operator, not shipped"


def test_deployments_agree_with_the_settings_they_feed(
    objects: dict[tuple[str, str], dict[str, Any]], procs: list[Process]
) -> None:
    backends = {p.name: p for p in procs if p.backend}
    for process in procs:
        deployment = objects[("Deployment", process.k8s_name)]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [process.name] and resolve(container["args"])[0] == process.module
        env = pod_env(container)
        try:
            settings = load_settings(process.name, env)
            gateway = None if process.backend else load_gateway_settings(settings, env)
        except SettingsError as error:
            pytest.fail(f"{process.name} would not start in its pod: {error}")
        grpc_port = int(settings.grpc_addr.rpartition(":")[2])
        assert settings.grpc_addr.startswith("0.0.0.0:")
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        expected = {"grpc": grpc_port, "metrics": settings.metrics_port}
        if gateway is not None:  # and the JSON-over-HTTP port its settings bind
            expected["http"] = int(gateway.http_bind.rpartition(":")[2])
        assert ports == expected
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": grpc_port}, f"{process.name} {probe}"
        assert env["QUN_RULES_FILE"] == RULES_FILE
        assert ("QUN_DATABASE_URL" in env) == process.database
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(
            settings.metrics_port
        )
        if gateway is not None:
            for backend in backends.values():
                address = getattr(gateway, f"{backend.name}_addr", None) or env[backend.addr_env]
                host, _, port = address.removeprefix("dns:///").rpartition(":")
                service = objects[("Service", host)]
                # Every replica: the headless Service, whose name resolves to each ready pod.
                assert address.startswith("dns:///") and service["spec"]["clusterIP"] == "None", address
                assert {"name": "grpc", "port": int(port)}.items() <= next(
                    p for p in service["spec"]["ports"] if p["name"] == "grpc"
                ).items(), f"gateway → {backend.name}"
                assert service["spec"]["selector"]["app.kubernetes.io/name"] == backend.name
                assert int(port) == backend.grpc_port


def test_services_select_the_pods_and_name_their_ports(
    objects: dict[tuple[str, str], dict[str, Any]], procs: list[Process]
) -> None:
    for process in procs:
        labels = objects[("Deployment", process.k8s_name)]["spec"]["template"]["metadata"]["labels"]
        for name in (process.k8s_name, f"{process.k8s_name}-pods"):
            service = objects[("Service", name)]
            assert service["spec"]["selector"].items() <= labels.items(), name
            named = {"grpc", "metrics"} | ({"http"} if process.http_port else set())
            assert {p["targetPort"] for p in service["spec"]["ports"]} == named
        assert objects[("Service", f"{process.k8s_name}-pods")]["spec"]["clusterIP"] == "None"


def test_autoscalers_and_disruption_budgets(
    objects: dict[tuple[str, str], dict[str, Any]], procs: list[Process]
) -> None:
    for process in procs:
        deployment = objects[("Deployment", process.k8s_name)]
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
        hpa = objects[("HorizontalPodAutoscaler", process.k8s_name)]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": process.k8s_name}
        assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
        pdb = objects[("PodDisruptionBudget", process.k8s_name)]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb["selector"]["matchLabels"].items() <= labels.items()
        resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]


def test_pods_run_non_root_on_a_read_only_filesystem(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    for (kind, name), doc in objects.items():
        if kind not in {"Deployment", "Job"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, f"{name}/{container['name']}"
            assert context["allowPrivilegeEscalation"] is False, f"{name}/{container['name']}"
            assert context["capabilities"]["drop"] == ["ALL"], f"{name}/{container['name']}"
            assert "resources" in container, f"{name}/{container['name']}"


def test_migrations_run_as_jobs_and_pods_wait_for_them(
    objects: dict[tuple[str, str], dict[str, Any]], procs: list[Process]
) -> None:
    jobs = {name for kind, name in objects if kind == "Job"}
    assert jobs == {f"{p.k8s_name}-migrate" for p in procs if p.database}
    for process in (p for p in procs if p.database):
        job_pod = objects[("Job", f"{process.k8s_name}-migrate")]["spec"]["template"]["spec"]
        (migrate,) = job_pod["containers"]
        assert migrate["args"] == ["migrate", process.name]
        assert resolve(migrate["args"])[0] == "services.common.migrations"
        pod = objects[("Deployment", process.k8s_name)]["spec"]["template"]["spec"]
        (wait,) = pod["initContainers"]
        assert wait["args"] == ["wait-migrated", process.name]
        assert (
            pod_env(wait)["QUN_DATABASE_URL"]
            == pod_env(migrate)["QUN_DATABASE_URL"]
            == pod_env(pod["containers"][0])["QUN_DATABASE_URL"]
        )


def test_rules_config_map_is_a_valid_override(
    objects: dict[tuple[str, str], dict[str, Any]], procs: list[Process], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    config_map = objects[("ConfigMap", RULES_CONFIGMAP)]
    path = tmp_path / "rules.toml"
    path.write_text(config_map["data"]["rules.toml"])
    load_rules(env={"QUN_RULES_FILE": str(path)})
    for process in procs:
        pod = objects[("Deployment", process.k8s_name)]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert volumes[mounts[RULES_MOUNT]["name"]]["configMap"]["name"] == RULES_CONFIGMAP


def test_kubernetes_scrape_config_has_a_job_per_process(procs: list[Process]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-kubernetes.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {p.name for p in procs}
    for process in procs:
        (sd,) = jobs[process.name]["dns_sd_configs"]
        assert sd["names"] == [f"{process.k8s_name}-pods.qun.svc"] and sd["port"] == process.metrics_port


def test_only_the_gateway_reaches_a_backend_and_only_prometheus_the_metrics(
    objects: dict[tuple[str, str], dict[str, Any]], procs: list[Process]
) -> None:
    gateway = next(p for p in procs if not p.backend)
    gateway_labels = objects[("Deployment", gateway.k8s_name)]["spec"]["template"]["metadata"]["labels"]
    for process in procs:
        policy = objects[("NetworkPolicy", process.k8s_name)]["spec"]
        pod_labels = objects[("Deployment", process.k8s_name)]["spec"]["template"]["metadata"]["labels"]
        assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert policy["policyTypes"] == ["Ingress"]
        by_port = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["ingress"]}
        assert set(by_port) == {"grpc", "metrics"}
        if process.backend:
            [peer] = by_port["grpc"]
            assert peer["podSelector"]["matchLabels"].items() <= gateway_labels.items(), process.name
        else:
            assert by_port["grpc"] is None, "the gateway's API is public"
        [scraper] = by_port["metrics"]
        assert scraper["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
