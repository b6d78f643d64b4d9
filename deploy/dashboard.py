"""The Grafana dashboard's panels, one entry each; ``make deploy-render`` writes the JSON.

Every ``expr`` here is run against a real Prometheus by the end-to-end suite,
which fails when one returns no series. So a panel belongs here only once a
running process exports its metric: the campaigns and push panels below are
commented out until those services serve them — uncomment (or adjust) the
entry, run ``make deploy-render``, and ``make e2e`` checks it.

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


PANELS: list[Panel] = [
    # --- gRPC, every process -------------------------------------------------------------------
    Panel("gRPC", "Requests per second by service and method",
          f"sum by (job, grpc_method) (rate(grpc_server_handled_total[{R}]))", "{{job}} {{grpc_method}}", "reqps"),
    Panel("gRPC", "Responses other than OK, by code",
          f'sum by (job, grpc_method, grpc_code) (rate(grpc_server_handled_total{{grpc_code!="OK"}}[{R}]))',
          "{{job}} {{grpc_method}} {{grpc_code}}", "reqps",
          "Refusals (FAILED_PRECONDITION, PERMISSION_DENIED …) are answers, not failures; see the error ratio."),
    Panel("gRPC", "Server error ratio by service",
          f'(sum by (job) (rate(grpc_server_handled_total{{grpc_code=~"{SERVER_ERROR_CODES}"}}[{R}]))'
          f" or sum by (job) (rate(grpc_server_handled_total[{R}])) * 0)"
          f" / sum by (job) (rate(grpc_server_handled_total[{R}]))",
          "{{job}}", "percentunit", f"Share of calls ending {SERVER_ERROR_CODES.replace('|', ', ')}."),
    Panel("gRPC", "p99 latency by service and method",
          f"histogram_quantile(0.99, sum by (job, grpc_method, le) (rate(grpc_server_handling_seconds_bucket[{R}])))",
          "{{job}} {{grpc_method}}", "s"),
    Panel("gRPC", "p50 latency by service and method",
          f"histogram_quantile(0.5, sum by (job, grpc_method, le) (rate(grpc_server_handling_seconds_bucket[{R}])))",
          "{{job}} {{grpc_method}}", "s"),
    Panel("gRPC", "Gateway calls to backends by code",
          f"sum by (grpc_service, grpc_method, grpc_code) (rate(grpc_client_handled_total[{R}]))",
          "{{grpc_method}} {{grpc_code}}", "reqps"),
    Panel("gRPC", "Internal errors (each one is a bug)",
          f"sum(rate(qun_internal_errors_total[{R}])) or vector(0)", "internal errors", "reqps"),
    Panel("gRPC", "Targets up by process", "sum by (job) (up)", "{{job}}"),
    # --- groups and eligibility ----------------------------------------------------------------
    Panel("Joins and groups", "Joins by outcome and reason",
          f"sum by (outcome, rule) (rate(qun_joins_total[{R}]))", "{{outcome}} {{rule}}", "reqps",
          "Refused joins count once per failed SPEC rule."),
    Panel("Joins and groups", "Eligibility refusals by rule",
          f"sum by (rule) (rate(qun_eligibility_refusals_total[{R}]))", "{{rule}}", "reqps"),
    Panel("Joins and groups", "Group-set creations by outcome",
          f"sum by (kind, outcome) (rate(qun_group_set_creates_total[{R}]))", "{{kind}} {{outcome}}", "reqps"),
    Panel("Joins and groups", "Sub-groups created per hour",
          f"sum by (kind) (rate(qun_groups_sub_groups_created_total[{R}])) * 3600", "{{kind}}"),
    Panel("Joins and groups", "Members leaving per hour",
          f"sum by (kind) (rate(qun_groups_leaves_total[{R}])) * 3600", "{{kind}}"),
    Panel("Joins and groups", "Facts ingested by kind",
          f"sum by (kind) (rate(qun_eligibility_facts_total[{R}]))", "{{kind}}", "reqps"),
    # --- campaigns: uncomment once the end-to-end scenarios drive a flash sale and a purchase -------
    # Panel("Campaigns", "Flash-sale stock left",
    #       "min by (store_id, activity_id) (qun_campaigns_flash_sale_stock_left)", "{{store_id}} {{activity_id}}"),
    # Panel("Campaigns", "Purchases by outcome and reason",
    #       f"sum by (sale, outcome, rule) (rate(qun_campaigns_purchases_total[{R}]))", "{{sale}} {{outcome}} {{rule}}",
    #       "reqps"),
    # --- push: uncomment once the end-to-end scenarios submit a push and one is refused -------------
    # Panel("Push", "Pushes by state", f"sum by (kind, state) (rate(qun_push_pushes_total[{R}]))",
    #       "{{kind}} {{state}}", "reqps"),
    # Panel("Push", "Quota refusals by rule",
    #       f"sum by (rule, reason) (rate(qun_push_quota_refusals_total[{R}]))", "{{rule}} {{reason}}", "reqps"),
    # Panel("Push", "Dispatcher lag", "max by (instance) (qun_push_dispatcher_lag_seconds)", "{{instance}}", "s"),
]
