"""After the scenarios, through Prometheus's HTTP API: every target is up, every query of the
Grafana dashboard returns data, and (with the suite's own Prometheus) the project's rules load,
evaluate without error and fire no alert."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from services.common.processes import PROCESSES
from tests.e2e.harness import Deployment, PrometheusAPI, dashboard_queries

POLL_SECONDS = 0.5


def wait_seconds(deployment: Deployment) -> float:
    default = 120.0 if deployment.prometheus_url else 30.0
    return float(os.environ.get("QUN_E2E_WAIT_SECONDS", default))


def eventually(check: Callable[[], list[str]], seconds: float) -> None:
    """Retries ``check`` (which returns what is still wrong) until it returns nothing."""
    deadline = time.monotonic() + seconds
    while problems := check():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {seconds:.0f}s:\n  " + "\n  ".join(problems))
        time.sleep(POLL_SECONDS)


def expected_jobs(deployment: Deployment) -> set[str]:
    return set(deployment.metrics_targets) or set(PROCESSES)


def test_every_target_is_up(deployment: Deployment, prometheus: PrometheusAPI) -> None:
    jobs = expected_jobs(deployment)

    def down() -> list[str]:
        seen: dict[str, list[str]] = {}
        for series in prometheus.query("up"):
            seen.setdefault(series["metric"].get("job", ""), []).append(series["value"][1])
        problems = [f"{job}: no target scraped" for job in sorted(jobs - set(seen))]
        problems += [f"{job}: up = {values}" for job, values in sorted(seen.items()) if job in jobs and "0" in values]
        return problems

    eventually(down, wait_seconds(deployment))


def test_every_dashboard_query_returns_data(deployment: Deployment, prometheus: PrometheusAPI, traffic: None) -> None:
    queries = dashboard_queries(os.environ.get("QUN_E2E_RATE_INTERVAL", "1m"))
    assert queries

    def empty() -> list[str]:
        return [f"{title}: no series for {expr}" for title, expr in queries if not prometheus.query(expr)]

    eventually(empty, wait_seconds(deployment))


def test_rules_load_evaluate_and_stay_quiet(deployment: Deployment, prometheus: PrometheusAPI, traffic: None) -> None:
    if not prometheus.own:
        # The deployment's own Prometheus: only the alert that must never fire is ours to judge.
        firing = [a for a in prometheus.alerts() if a["labels"].get("alertname") == "QunFlashSaleStockBelowZero"]
        assert not firing, firing
        return

    def unhealthy() -> list[str]:
        rules = prometheus.rules()
        problems = [] if rules else ["no rules loaded"]
        problems += [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") != "ok"]
        return problems

    eventually(unhealthy, wait_seconds(deployment))
    assert {r["name"] for r in prometheus.rules() if r["type"] == "alerting"} >= {
        "QunTargetDown",
        "QunGrpcErrorRatioHigh",
        "QunFlashSaleStockBelowZero",
    }
    alerts = [a for a in prometheus.alerts() if a["state"] in {"pending", "firing"}]
    assert not alerts, [(a["labels"], a["state"]) for a in alerts]


def test_error_codes_are_labelled_as_the_rules_expect(prometheus: PrometheusAPI, traffic: None) -> None:
    """The scenarios' refusals appear under the code names rules.yml and the dashboard use."""
    deadline = time.monotonic() + 30
    while not (codes := {s["metric"]["grpc_code"] for s in prometheus.query("grpc_server_handled_total")}) >= {
        "OK",
        "FAILED_PRECONDITION",
    }:
        assert time.monotonic() < deadline, codes
        time.sleep(POLL_SECONDS)
