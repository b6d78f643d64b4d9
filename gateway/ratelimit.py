"""Per-principal rate limits: a token bucket per caller, rates from ``[abuse]`` in the rules file.

Runs after authentication, so the bucket is the principal's (role, subject and
store), not an address's. The configured rates are the platform's: buckets
live in each gateway process, so each of ``QUN_GATEWAY_REPLICAS`` replicas
(from the deployment's configuration) takes its share, the rate and burst
divided by that count, and a principal whose calls are spread over the
replicas (round_robin, or a load balancer) gets the configured rate in all.
No call pays a shared store's round trip for it. Over the limit a
call is RESOURCE_EXHAUSTED with ``google.rpc.RetryInfo`` (when a token will be
there again) and ``ErrorInfo`` reason ``RATE_LIMITED``, counted in
``qun_gateway_rate_limited_total{role}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from gateway import metrics
from gateway.auth import Principal, current_principal
from services.common.errors import ServiceError
from services.common.interceptors import GateInterceptor, abort_with
from services.common.rules import AbuseRules

# Above this many buckets, the full ones (indistinguishable from new) are dropped.
MAX_BUCKETS = 100_000


class RateLimited(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"

    def __init__(self, role: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"rate limit of {role} callers exceeded; retry in {retry_after:.3f}s",
            metadata={"role": role, "retry_after_ms": str(math.ceil(retry_after * 1000))},
        )

    def details(self) -> list[object]:
        seconds = math.floor(self.retry_after)
        nanos = min(int((self.retry_after - seconds) * 1e9), 999_999_999)
        return [error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos))]


@dataclass
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by principal; ``now`` is injectable for tests."""

    def __init__(self, rules: AbuseRules, now: Callable[[], float] = time.monotonic, *, replicas: int = 1) -> None:
        self.rules = rules
        self.now = now
        self.replicas = replicas
        self.buckets: dict[tuple[str, str, str], Bucket] = {}

    def limit(self, role: str) -> tuple[float, float]:
        """This replica's share of the role's rate (a second) and burst (at least one call)."""
        rate, burst = self.rules.limit(role)
        return rate / self.replicas, max(1.0, burst / self.replicas)

    def take(self, principal: Principal) -> float:
        """Takes one token; returns 0 when admitted, else the seconds until one is there."""
        rate, burst = self.limit(principal.role.value)
        now = self.now()
        key = (principal.role.value, principal.subject, principal.store_id)
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._prune(now)
            bucket = self.buckets[key] = Bucket(float(burst), now)
        else:
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def _prune(self, now: float) -> None:
        for key, bucket in list(self.buckets.items()):
            rate, burst = self.limit(key[0])
            if bucket.tokens + (now - bucket.updated) * rate >= burst:
                del self.buckets[key]


class RateLimitInterceptor(GateInterceptor):
    """After authentication: refuses a principal's call once its bucket is empty."""

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    async def admit(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        principal = current_principal()
        wait = self.limiter.take(principal)
        if wait > 0:
            metrics.rate_limited.labels(principal.role.value).inc()
            await abort_with(context, RateLimited(principal.role.value, wait))
