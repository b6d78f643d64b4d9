"""Domain metrics of the eligibility service (default registry, served on /metrics).

They answer the questions ops ask about eligibility: how many creations and
joins are refused, by which rule, and how many facts of each kind arrive.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from services.common.errors import Failure

checks = Counter(
    "qun_eligibility_checks_total",
    "Eligibility checks answered, by check (create, join) and outcome (allowed, refused).",
    ("check", "outcome"),
)
refusals = Counter(
    "qun_eligibility_refusals_total",
    "Failed rules in refused checks, by SPEC rule id (a refusal may count several rules).",
    ("rule",),
)
facts = Counter(
    "qun_eligibility_facts_total",
    "Facts ingested in committed batches, by kind (including re-sent, unchanged ones).",
    ("kind",),
)
escalations = Counter(
    "qun_eligibility_escalations_total",
    "Consumers put on the platform blacklist at ingestion, by rule (C6, C7).",
    ("rule",),
)


def record_check(check: str, failures: Iterable[Failure]) -> None:
    failed = list(failures)
    checks.labels(check, "refused" if failed else "allowed").inc()
    for failure in failed:
        refusals.labels(failure.rule_id).inc()
