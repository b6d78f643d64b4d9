"""Domain metrics of the groups service, next to the standard ``grpc_server_*`` ones.

Joins by outcome and the rule that refused them show why people do not get
in (SPEC C13, T1, T2, T4, C11); sub-group and group-set creations and leaves
show how the topology grows (T5); removals by cause show who takes members
out (R5, C15). Counted after the transaction committed.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

joins = Counter(
    "qun_groups_joins_total",
    "AddMember outcomes: joined, or refused by a SPEC rule (one count per failed rule).",
    ("kind", "outcome", "rule"),
)
sub_groups_created = Counter(
    "qun_groups_sub_groups_created_total",
    "Sub-groups created, the first with its set and the next when full (T5).",
    ("kind",),
)
group_sets_created = Counter("qun_groups_group_sets_created_total", "Group-sets created.", ("kind",))
leaves = Counter("qun_groups_leaves_total", "Members who left a group-set.", ("kind",))
removals = Counter(
    "qun_groups_removals_total",
    "Members removed by someone else, by cause: owner, admin, store_blacklist (R5), sleeping (C15).",
    ("cause",),
)


def joined(kind: str) -> None:
    joins.labels(kind, "joined", "").inc()


def refused(kind: str, rule_ids: Iterable[str]) -> None:
    for rule in rule_ids:
        joins.labels(kind, "refused", rule).inc()


def removed(cause: str) -> None:
    removals.labels(cause).inc()
