"""deploy/docker-compose.yml: valid for Docker Compose v2, loud about missing secrets, and in
agreement with what each process reads (ports, addresses, required settings)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from deploy.entrypoint import resolve
from deploy.topology import Process
from gateway.settings import load_gateway_settings
from services.common.processes import PROCESSES
from services.common.settings import SettingsError, load_settings
from tests.deploy.conftest import COMPOSE_FILE, DEPLOY, REQUIRED_ENV, run_compose


def test_config_is_valid_with_the_required_variables_set() -> None:
    result = run_compose("config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
def test_each_required_variable_fails_loudly_when_unset(missing: str) -> None:
    env = {k: v for k, v in REQUIRED_ENV.items() if k != missing}
    result = run_compose("config", "-q", env=env)
    assert result.returncode != 0
    assert missing in result.stderr


def test_secrets_are_never_defaulted_in_the_file() -> None:
    raw = COMPOSE_FILE.read_text()
    for name in REQUIRED_ENV:
        assert f"${{{name}:?" in raw, f"{name} must use ${{{name}:?…}} so compose refuses to start without it"
        assert f"${{{name}:-" not in raw and f"${{{name}-" not in raw, f"{name} must have no default"


def test_every_process_of_the_local_stack_is_a_compose_service(compose_model: dict[str, Any]) -> None:
    missing = set(PROCESSES) - set(compose_model["services"])
    assert not missing, f"run `make deploy-render`: {sorted(missing)} not in the compose file"


def settings_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_each_process_starts_with_its_compose_environment(compose_model: dict[str, Any], procs: list[Process]) -> None:
    """The compose environment, given to the services' own settings loaders, is complete and valid."""
    for process in procs:
        env = settings_env(compose_model["services"][process.name])
        try:
            settings = load_settings(process.name, env)
            if not process.backend:
                load_gateway_settings(settings, env)
        except SettingsError as error:
            pytest.fail(f"{process.name} would not start under compose: {error}")
        host, _, port = settings.grpc_addr.rpartition(":")
        assert host == "0.0.0.0", f"{process.name} must listen beyond loopback in a container"
        assert (int(port), settings.metrics_port) == (process.grpc_port, process.metrics_port), process.name


def test_ports_health_checks_and_addresses_agree(compose_model: dict[str, Any], procs: list[Process]) -> None:
    services = compose_model["services"]
    for process in procs:
        service = services[process.name]
        settings = load_settings(process.name, settings_env(service))
        grpc_port = int(settings.grpc_addr.rpartition(":")[2])
        assert {str(grpc_port), str(settings.metrics_port)} <= set(service.get("expose", [])), process.name
        check = service["healthcheck"]["test"]
        assert check[:4] == ["CMD", "python", "-m", "deploy.healthcheck"], process.name
        assert check[4:] == [str(grpc_port)], f"{process.name}'s health check probes another port"
        assert service["command"] == [process.name]
        assert resolve(service["command"])[0] == process.module
    gateway = next(p for p in procs if not p.backend)
    env = settings_env(services[gateway.name])
    config = load_gateway_settings(load_settings(gateway.name, env), env)
    published = {int(port["target"]) for port in services[gateway.name].get("ports", [])}
    http_port = int(config.http_bind.rpartition(":")[2])
    assert published == {gateway.grpc_port, http_port}, "the gateway, and only its gRPC and HTTP ports, is published"
    for backend in (p for p in procs if p.backend):
        address = getattr(config, f"{backend.name}_addr", None) or env.get(backend.addr_env)
        assert address == f"{backend.name}:{backend.grpc_port}", f"gateway reaches {backend.name} at {address}"
        assert services[gateway.name]["depends_on"][backend.name]["condition"] == "service_healthy"
        assert "ports" not in services[backend.name], f"{backend.name} is reached only through the gateway"


def test_databases_are_migrated_before_their_service_starts(
    compose_model: dict[str, Any], procs: list[Process]
) -> None:
    services = compose_model["services"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    init = services["postgres-init"]
    assert init["depends_on"]["postgres"]["condition"] == "service_healthy"
    sql = (DEPLOY / "postgres" / "create-databases.sql").read_text()
    urls = set()
    for process in (p for p in procs if p.database):
        service, migrate = services[process.name], services[f"migrate-{process.name}"]
        url = service["environment"]["QUN_DATABASE_URL"]
        assert url.startswith("postgresql://") and url.endswith(f"@postgres:5432/{process.database_name}")
        assert migrate["environment"]["QUN_DATABASE_URL"] == url
        assert migrate["command"] == ["migrate", process.name]
        assert resolve(migrate["command"])[0] == "services.common.migrations"
        assert service["depends_on"][f"migrate-{process.name}"]["condition"] == "service_completed_successfully"
        assert migrate["depends_on"]["postgres-init"]["condition"] == "service_completed_successfully"
        assert f"'CREATE DATABASE {process.database_name}'" in sql
        urls.add(url)
    assert len(urls) == sum(p.database for p in procs), "each service has a database of its own"


def test_qun_containers_are_hardened(compose_model: dict[str, Any], procs: list[Process]) -> None:
    services = compose_model["services"]
    names = [p.name for p in procs] + [f"migrate-{p.name}" for p in procs if p.database]
    for name in names:
        service = services[name]
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert service["build"]["dockerfile"] == "deploy/Dockerfile", name


def test_prometheus_scrapes_every_process_at_its_metrics_port(
    compose_model: dict[str, Any], procs: list[Process]
) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {p.name for p in procs}
    for process in procs:
        targets = [t for group in jobs[process.name]["static_configs"] for t in group["targets"]]
        assert targets == [f"{process.name}:{process.metrics_port}"]
    mounts = {
        volume["target"]: volume.get("source", "") for volume in compose_model["services"]["prometheus"]["volumes"]
    }
    assert mounts["/etc/prometheus/prometheus.yml"].endswith("deploy/prometheus/prometheus.yml")
    assert mounts["/etc/prometheus/rules.yml"].endswith("deploy/prometheus/rules.yml")
    assert config["rule_files"] == ["rules.yml"]  # next to the config, in the container too


def test_grafana_is_provisioned_with_the_datasource_the_dashboard_names(compose_model: dict[str, Any]) -> None:
    mounts = {volume["target"]: volume.get("source", "") for volume in compose_model["services"]["grafana"]["volumes"]}
    assert mounts["/etc/grafana/provisioning"].endswith("deploy/grafana/provisioning")
    assert mounts["/var/lib/grafana/dashboards"].endswith("deploy/grafana/dashboards")
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "qun.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    from deploy.render import DATASOURCE_UID

    assert source["uid"] == DATASOURCE_UID


def test_observability_is_a_profile_published_on_loopback_without_the_lifecycle_api(
    compose_model: dict[str, Any],
) -> None:
    """Prometheus and Grafana start with `--profile observability`; every published port listens on
    127.0.0.1 unless QUN_PUBLISH_ADDRESS says otherwise; nobody can stop Prometheus over HTTP."""
    services = compose_model["services"]
    for name in ("prometheus", "grafana"):
        assert services[name].get("profiles") == ["observability"], name
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert set(published) == {"gateway", "prometheus", "grafana"}
    for name, ports in published.items():
        assert all(port.get("host_ip") == "127.0.0.1" for port in ports), (name, ports)
    assert not any("lifecycle" in argument for argument in services["prometheus"]["command"])
    plain = run_compose("config", "--format", "json")
    assert plain.returncode == 0, plain.stderr
    assert not {"prometheus", "grafana"} & set(json.loads(plain.stdout)["services"])
    everywhere = run_compose(
        "--profile",
        "observability",
        "config",
        "--format",
        "json",
        env={**REQUIRED_ENV, "QUN_PUBLISH_ADDRESS": "0.0.0.0"},
    )
    ports = json.loads(everywhere.stdout)["services"]["grafana"]["ports"]
    assert ports[0]["host_ip"] == "0.0.0.0"
