"""The Grafana dashboard's panels, one entry each; ``make deploy-render`` writes the JSON.

Every ``expr`` here is run against a real Prometheus by the end-to-end suite,
which fails when one returns no series. A panel with ``service=`` appears
only while that process is deployed. A panel whose metric needs traffic
(a purchase, a push) belongs here once the end-to-end scenarios
(``tests/e2e/scenarios.py``) produce that traffic: the campaigns and push
panels below wait for that — uncomment the entry, run ``make deploy-render``,
and ``make e2e`` checks it.

``$__rate_interval`` is Grafana's; the end-to-end suite substitutes a window.
"""

from __future__ import annotations

from dataclasses import dataclass

R = "$__rate_interval"
SERVER_ERROR_CODES = "UNKNOWN|INTERNAL|UNAVAILABLE|DATA_LOSS|DEADLINE_EXCEEDED"


@dataclass(frozen=True)
class Panel:
    section: str
    title: str
    expr: str
    legend: str = ""
    unit: str = "short"
    description: str = ""
    # The process whose metric this is: the panel is left out while that process is not
    # deployed (not in services.common.processes.PROCESSES). Empty for metrics every process exports.
    service: str = ""


PANELS: list[Panel] = [
    # --- gRPC, every process -------------------------------------------------------------------
    Panel(
        section="gRPC",
        title="Requests per second by service and method",
        expr=f"sum by (job, grpc_method) (rate(grpc_server_handled_total[{R}]))",
        legend="{{job}} {{grpc_method}}",
        unit="reqps",
    ),
    Panel(
        section="gRPC",
        title="Responses other than OK, by code",
        expr=f'sum by (job, grpc_method, grpc_code) (rate(grpc_server_handled_total{{grpc_code!="OK"}}[{R}]))',
        legend="{{job}} {{grpc_method}} {{grpc_code}}",
        unit="reqps",
        description="Refusals (FAILED_PRECONDITION, PERMISSION_DENIED …) are answers, not failures.",
    ),
    Panel(
        section="gRPC",
        title="Server error ratio by service",
        expr=(
            f'(sum by (job) (rate(grpc_server_handled_total{{grpc_code=~"{SERVER_ERROR_CODES}"}}[{R}]))'
            f" or sum by (job) (rate(grpc_server_handled_total[{R}])) * 0)"
            f" / sum by (job) (rate(grpc_server_handled_total[{R}]))"
        ),
        legend="{{job}}",
        unit="percentunit",
        description=f"Share of calls ending {SERVER_ERROR_CODES.replace('|', ', ')}.",
    ),
    Panel(
        section="gRPC",
        title="p99 latency by service and method",
        expr=f"histogram_quantile(0.99, sum by (job, grpc_method, le) (rate(grpc_server_handling_seconds_bucket[{R}])))",
        legend="{{job}} {{grpc_method}}",
        unit="s",
    ),
    Panel(
        section="gRPC",
        title="p50 latency by service and method",
        expr=f"histogram_quantile(0.5, sum by (job, grpc_method, le) (rate(grpc_server_handling_seconds_bucket[{R}])))",
        legend="{{job}} {{grpc_method}}",
        unit="s",
    ),
    Panel(
        section="gRPC",
        title="Gateway calls to backends by code",
        expr=f"sum by (grpc_service, grpc_method, grpc_code) (rate(grpc_client_handled_total[{R}]))",
        legend="{{grpc_method}} {{grpc_code}}",
        unit="reqps",
    ),
    Panel(
        section="gRPC",
        title="Internal errors (each one is a bug)",
        expr=f"sum(rate(qun_internal_errors_total[{R}])) or vector(0)",
        legend="internal errors",
        unit="reqps",
    ),
    Panel(
        section="gRPC",
        title="Targets up by process",
        expr="sum by (job) (up)",
        legend="{{job}}",
    ),
    # --- groups and eligibility ----------------------------------------------------------------
    Panel(
        section="Joins and groups",
        title="Joins by outcome and reason",
        expr=f"sum by (outcome, rule) (rate(qun_joins_total[{R}]))",
        legend="{{outcome}} {{rule}}",
        unit="reqps",
        description="Refused joins count once per failed SPEC rule.",
    ),
    Panel(
        section="Joins and groups",
        title="Eligibility refusals by rule",
        expr=f"sum by (rule) (rate(qun_eligibility_refusals_total[{R}]))",
        legend="{{rule}}",
        unit="reqps",
    ),
    Panel(
        section="Joins and groups",
        title="Group-set creations by outcome",
        expr=f"sum by (kind, outcome) (rate(qun_group_set_creates_total[{R}]))",
        legend="{{kind}} {{outcome}}",
        unit="reqps",
    ),
    Panel(
        section="Joins and groups",
        title="Sub-groups created per hour",
        expr=f"sum by (kind) (rate(qun_groups_sub_groups_created_total[{R}])) * 3600",
        legend="{{kind}}",
    ),
    Panel(
        section="Joins and groups",
        title="Members leaving per hour",
        expr=f"sum by (kind) (rate(qun_groups_leaves_total[{R}])) * 3600",
        legend="{{kind}}",
    ),
    Panel(
        section="Joins and groups",
        title="Facts ingested by kind",
        expr=f"sum by (kind) (rate(qun_eligibility_facts_total[{R}]))",
        legend="{{kind}}",
        unit="reqps",
    ),
    # --- push ----------------------------------------------------------------------------------
    Panel(
        section="Push",
        title="Dispatcher lag",
        expr="max by (instance) (qun_push_dispatcher_lag_seconds)",
        legend="{{instance}}",
        unit="s",
        description="How long the oldest due push has waited, per push replica (0 when none).",
        service="push",
    ),
    # --- campaigns: uncomment once the end-to-end scenarios run a flash sale with a purchase -------
    # Panel(
    #     service="campaigns",
    #     section="Campaigns",
    #     title="Flash-sale stock left",
    #     expr="min by (store_id, activity_id) (qun_campaigns_flash_sale_stock_left)",
    #     legend="{{store_id}} {{activity_id}}",
    # ),
    # Panel(
    #     service="campaigns",
    #     section="Campaigns",
    #     title="Purchases by outcome and reason",
    #     expr=f"sum by (sale, outcome, rule) (rate(qun_campaigns_purchases_total[{R}]))",
    #     legend="{{sale}} {{outcome}} {{rule}}",
    #     unit="reqps",
    # ),
    # --- push: uncomment once the end-to-end scenarios submit a push and have one refused ----------
    # Panel(
    #     service="push",
    #     section="Push",
    #     title="Pushes by state",
    #     expr=f"sum by (kind, state) (rate(qun_push_pushes_total[{R}]))",
    #     legend="{{kind}} {{state}}",
    #     unit="reqps",
    # ),
    # Panel(
    #     service="push",
    #     section="Push",
    #     title="Quota refusals by rule",
    #     expr=f"sum by (rule, reason) (rate(qun_push_quota_refusals_total[{R}]))",
    #     legend="{{rule}} {{reason}}",
    #     unit="reqps",
    # ),
]
