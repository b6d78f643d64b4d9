"""Domain metrics only the gateway can count: it alone sees every join's outcome."""

from prometheus_client import Counter, Histogram

joins = Counter(
    "qun_joins_total",
    "Join attempts through the gateway by outcome and, for refusals, each failed SPEC rule.",
    ("outcome", "rule"),
)
creates = Counter(
    "qun_group_set_creates_total", "Group-set creations through the gateway by outcome.", ("kind", "outcome")
)
http_requests = Counter(
    "qun_http_requests_total",
    "Calls on the gateway's HTTP port (Connect) by procedure and HTTP status; each is also a gRPC call.",
    ("procedure", "status"),
)
http_seconds = Histogram(
    "qun_http_request_seconds", "Time to answer a call on the gateway's HTTP port, by procedure.", ("procedure",)
)
rate_limited = Counter(
    "qun_gateway_rate_limited_total",
    "Calls refused with RESOURCE_EXHAUSTED by the per-principal rate limit, by the caller's role.",
    ("role",),
)
