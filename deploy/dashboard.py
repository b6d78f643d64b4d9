"""The Grafana dashboard's panels, one entry each; ``make deploy-render`` writes the JSON.

Every ``expr`` here is run against a real Prometheus by the end-to-end suite,
which fails when one returns no series. A panel with ``service=`` appears
only while that process is deployed. A panel whose metric needs traffic
(a purchase, a claim, a push) is backed by an end-to-end scenario that makes
it (``tests/e2e/scenarios.py``: ``flash_sale_and_prizes``, ``push_review_queue``).
Panels query the datasource the dashboard's ``datasource`` variable names, so
the JSON imports into any Grafana.

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
    Panel(
        section="Joins and groups",
        title="Scheduled job failures by task",
        expr=f"sum by (task) (rate(qun_job_failures_total[{R}]))",
        legend="{{task}}",
        unit="reqps",
        description="Stores a job could not settle (D3), each retried after a backoff; the other stores went on.",
    ),
    # --- campaigns -----------------------------------------------------------------------------
    Panel(
        service="campaigns",
        section="Campaigns",
        title="Flash-sale stock left",
        expr="min by (store_id, activity_id) (qun_campaigns_flash_sale_stock_left)",
        legend="{{store_id}} {{activity_id}}",
        description="The item's stock at each running flash sale's last purchase (M2); never below 0.",
    ),
    Panel(
        service="campaigns",
        section="Campaigns",
        title="Purchases by outcome and reason",
        expr=f"sum by (sale, outcome, rule) (rate(qun_campaigns_purchases_total[{R}]))",
        legend="{{sale}} {{outcome}} {{rule}}",
        unit="reqps",
        description="A refused purchase counts once per failed SPEC rule.",
    ),
    Panel(
        service="campaigns",
        section="Campaigns",
        title="Prize claims by outcome and reason",
        expr=f"sum by (outcome, rule) (rate(qun_campaigns_claims_total[{R}]))",
        legend="{{outcome}} {{rule}}",
        unit="reqps",
    ),
    Panel(
        service="campaigns",
        section="Campaigns",
        title="Refund ledger entries per hour by source",
        expr=f"sum by (source) (rate(qun_campaigns_refunds_total[{R}])) * 3600",
        legend="{{source}}",
        description="Unused cash red packets and unclaimed pools going back to merchants (M9).",
    ),
    Panel(
        service="campaigns",
        section="Campaigns",
        title="End cards posted per hour",
        expr=f"sum(rate(qun_campaigns_end_cards_total[{R}])) * 3600",
        legend="end cards",
        description="One per flash sale that ended (M6).",
    ),
    # --- push ----------------------------------------------------------------------------------
    Panel(
        service="push",
        section="Push",
        title="Pushes by state",
        expr=f"sum by (kind, state) (rate(qun_push_pushes_total[{R}]))",
        legend="{{kind}} {{state}}",
        unit="reqps",
    ),
    Panel(
        section="Push",
        title="Dispatcher lag",
        expr="max by (instance) (qun_push_dispatcher_lag_seconds)",
        legend="{{instance}}",
        unit="s",
        description="How long the oldest due push has waited, per push replica (0 when none).",
        service="push",
    ),
    Panel(
        service="push",
        section="Push",
        title="Deliveries written per second",
        expr=f"sum(rate(qun_push_deliveries_written_total[{R}]))",
        legend="deliveries",
        unit="reqps",
    ),
    Panel(
        service="push",
        section="Push",
        title="Review queue: oldest pending push",
        expr="max(qun_push_oldest_pending_review_seconds)",
        legend="oldest pending review",
        unit="s",
        description="Every replica reads it from the database (P8); QunPushReviewWindowEnding pages 4 h before "
        "the 24-hour window ends.",
    ),
    Panel(
        service="push",
        section="Push",
        title="Review queue: pushes pending review",
        expr="max(qun_push_pending_reviews)",
        legend="pending reviews",
    ),
    Panel(
        service="push",
        section="Push",
        title="Quota refusals by rule",
        expr=f"sum by (rule, reason) (rate(qun_push_quota_refusals_total[{R}]))",
        legend="{{rule}} {{reason}}",
        unit="reqps",
    ),
]
