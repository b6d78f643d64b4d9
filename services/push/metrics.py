"""Domain metrics of the push service (default registry, served on /metrics).

Pushes by kind and the state they entered, quota refusals by rule and
reason, the dispatcher's lag (how long the oldest due push has waited) and
the deliveries it writes (``rate()`` of the counter is deliveries per second).
Counted after the transaction committed.

The review queue's gauges (SPEC P8) are read from the database by every
replica's dispatcher loop, so each replica exports the same, true value and
``max by (job)`` is right however many replicas run; the review window is
exported beside them so the alert follows the rules file.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from services.common.errors import Failure
from services.push.kinds import DECLARATIONS, Quota
from services.push.rules import PushState

pushes = Counter(
    "qun_push_pushes_total", "Pushes entering a state (pending_review, approved, sent …), by kind.", ("kind", "state")
)
refusals = Counter(
    "qun_push_quota_refusals_total",
    "Failed rules in refused push submissions, by SPEC rule and reason (a refusal may count several).",
    ("rule", "reason"),
)
quota_returns = Counter(
    "qun_push_quota_returns_total", "Quotas given back by a rejection or cancellation (P6).", ("kind", "cause")
)
notices = Counter("qun_push_notices_total", "Back-office notices recorded: recall chances earned (P4).", ("kind",))
deliveries = Counter("qun_push_deliveries_written_total", "Deliveries written to the ledger by the dispatcher (P7).")
batches = Histogram(
    "qun_push_dispatch_batch_seconds",
    "Time to write one dispatcher batch (claim, deliveries, cursor, ledger) and commit it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
lag = Gauge(
    "qun_push_dispatcher_lag_seconds",
    "How long the oldest due push (approved or sending, send time passed) has waited; 0 when none.",
)
oldest_pending_review = Gauge(
    "qun_push_oldest_pending_review_seconds",
    "Age of the oldest push pending review, across every store (P8); 0 when none. Read from the database.",
)
pending_reviews = Gauge("qun_push_pending_reviews", "Pushes pending review across every store (P8).")
review_window = Gauge(
    "qun_push_review_window_seconds",
    "The review window of the rules file (review_delay_hours): approved later than this, a push is sent late (P6).",
)
errors = Counter(
    "qun_push_dispatcher_errors_total",
    "Dispatcher passes that failed and will be retried: the database, not a store (qun_job_failures_total counts those).",
)


def refused(failures: Iterable[Failure]) -> None:
    for failure in failures:
        refusals.labels(failure.rule_id, failure.reason).inc()


def _declared_kinds() -> None:
    """Every declared kind's series from the start, so a kind nobody has pushed yet reads 0, not absent."""
    for declared in DECLARATIONS:
        pushes.labels(declared.kind.value, PushState.PENDING_REVIEW.value)
        if declared.quota is Quota.YEARLY_SLOT:
            notices.labels(declared.kind.value)


_declared_kinds()
