"""Domain metrics only the gateway can count: it alone sees every join's outcome."""

from prometheus_client import Counter

joins = Counter(
    "qun_joins_total",
    "Join attempts through the gateway by outcome and, for refusals, each failed SPEC rule.",
    ("outcome", "rule"),
)
creates = Counter(
    "qun_group_set_creates_total", "Group-set creations through the gateway by outcome.", ("kind", "outcome")
)
rate_limited = Counter(
    "qun_gateway_rate_limited_total",
    "Calls refused with RESOURCE_EXHAUSTED by the per-principal rate limit, by the caller's role.",
    ("role",),
)
