"""Alerts, recording rules and the dashboard name metrics and labels the code really exports.

`promtool check`/`test rules` run in `make deploy-check`; the dashboard's queries are run against
a real Prometheus by the end-to-end suite. These checks catch the rest offline: a renamed metric,
a status code spelled another way, a generated file nobody re-rendered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import yaml

from deploy import render
from services.common.processes import PROCESSES
from tests.deploy.conftest import DEPLOY, ROOT

RULES = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "qun.json").read_text())
# Names of exported metrics; recording rules (level:metric:operations) are promtool's to check.
METRIC = re.compile(r"(?<![:\w])((?:qun|grpc)_[a-z0-9_]+)(?![:\w])")
DEFINED = re.compile(r"""(?:Counter|Gauge|Histogram|Summary)\(\s*["']([a-z_:][a-z0-9_:]*)["']""")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\{[^}]*\}")


def exported_metrics() -> set[str]:
    """Every metric name the services' and the gateway's code defines."""
    return {
        name
        for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("gateway/**/*.py")]
        for name in DEFINED.findall(path.read_text())
    }


def referenced(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label names in selectors and groupings left out)."""
    names = set()
    for name in METRIC.findall(LABEL_LISTS.sub(" ", expr)):
        for suffix in HISTOGRAM_SUFFIXES:
            name = name.removesuffix(suffix)
        names.add(name)
    return names


def rule_exprs() -> list[tuple[str, str]]:
    return [(rule.get("alert") or rule["record"], rule["expr"]) for group in RULES["groups"] for rule in group["rules"]]


def test_generated_files_are_up_to_date() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in render.outputs().items()
        if not path.exists() or path.read_text() != text
    ]
    stale += [str(path.relative_to(ROOT)) for path in render.stale_k8s_files(render.outputs())]
    assert not stale, f"run `make deploy-render`: {stale}"


def test_alerts_name_metrics_the_code_exports() -> None:
    """A rule on a metric that no running service exports can never fire. An alert may name a
    metric of a service that is not deployed yet (it waits for it); once that service runs under
    `make up`, it must export the metric."""
    exported = exported_metrics()
    for name, expr in rule_exprs():
        for metric in referenced(expr):
            if metric in exported:
                continue
            owner = metric.split("_")[1]
            assert owner not in PROCESSES, (
                f"{name} watches {metric}, which {owner} does not export: "
                "export it, or change deploy/prometheus/rules.yml"
            )


def test_dashboard_queries_only_exported_metrics() -> None:
    exported = exported_metrics()
    for title, expr in render.dashboard_exprs(DASHBOARD):
        missing = referenced(expr) - exported
        assert not missing, f"panel {title!r} queries {missing}, which no service exports"


def test_status_codes_in_queries_are_the_names_the_interceptor_records() -> None:
    """The interceptors label grpc_code with grpc.StatusCode names (OK, FAILED_PRECONDITION …)."""
    names = set(grpc.StatusCode.__members__)
    exprs = [expr for _, expr in rule_exprs()] + [expr for _, expr in render.dashboard_exprs(DASHBOARD)]
    for expr in exprs:
        for match in re.findall(r'grpc_code\s*(?:=~|!=|=|!~)\s*"([^"]+)"', expr):
            assert set(match.split("|")) <= names, f"unknown status code in {match!r}"


def test_alerts_have_severity_and_a_summary() -> None:
    alerts = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
    assert {a["alert"] for a in alerts} >= {
        "QunTargetDown",
        "QunGrpcErrorRatioHigh",
        "QunGrpcLatencyHigh",
        "QunDispatcherLagging",
        "QunFlashSaleStockBelowZero",
        "QunQuotaRefusalsSpiking",
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in {"page", "ticket"}, alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]
    tested = yaml.safe_load((DEPLOY / "prometheus" / "rules.test.yml").read_text())
    covered = {case["alertname"] for test in tested["tests"] for case in test.get("alert_rule_test", [])}
    assert covered == {a["alert"] for a in alerts}, "every alert has a promtool unit test"


def test_dashboard_panels_use_the_datasource_variable_and_unique_ids() -> None:
    """The datasource is a variable (any Prometheus of the Grafana it is imported into), never a
    uid only qun's provisioning has."""
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus" and variable["name"] == render.DATASOURCE_VARIABLE
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    queries = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
    assert queries
    for panel in queries:
        sources = [panel["datasource"], *(target["datasource"] for target in panel["targets"])]
        assert all(source["uid"] == f"${{{variable['name']}}}" for source in sources), panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    assert render.DATASOURCE_UID not in json.dumps(DASHBOARD)


def test_dashboard_covers_what_ops_watch() -> None:
    exprs = " ".join(expr for _, expr in render.dashboard_exprs(DASHBOARD))
    for metric in (
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "qun_joins_total",
        "qun_groups_sub_groups_created_total",
        "qun_job_failures_total",
        # campaigns: stock left, purchases, claims, refunds, end cards
        "qun_campaigns_flash_sale_stock_left",
        "qun_campaigns_purchases_total",
        "qun_campaigns_claims_total",
        "qun_campaigns_refunds_total",
        "qun_campaigns_end_cards_total",
        # push: by state, dispatcher lag, deliveries, the review queue
        "qun_push_pushes_total",
        "qun_push_dispatcher_lag_seconds",
        "qun_push_deliveries_written_total",
        "qun_push_oldest_pending_review_seconds",
        "qun_push_pending_reviews",
    ):
        assert metric in exprs, metric
    sections = {panel["title"] for panel in DASHBOARD["panels"] if panel["type"] == "row"}
    assert {"gRPC", "Joins and groups", "Campaigns", "Push"} <= sections


def test_rules_files_are_the_ones_prometheus_loads() -> None:
    for config in ("prometheus.yml", "prometheus-kubernetes.yml"):
        loaded = yaml.safe_load((DEPLOY / "prometheus" / config).read_text())
        assert loaded["rule_files"] == ["rules.yml"], config
    assert Path(DEPLOY / "prometheus" / "rules.test.yml").exists()
