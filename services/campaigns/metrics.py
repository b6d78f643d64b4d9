"""Domain metrics of the campaigns service, next to the standard ``grpc_server_*`` ones.

Stock left per running flash sale, purchases and claims by outcome and the
rule that refused them, sold-out events, activities created or refused and
how many a group-set runs at once (M11), and what the expiry job settled
(M6, M9). Counted after the transaction committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from services.campaigns.kinds import DECLARATIONS

if TYPE_CHECKING:
    from services.campaigns.refunds import SweepCounts

flash_sale_stock_left = Gauge(
    "qun_campaigns_flash_sale_stock_left",
    "The item's stock as last seen by this replica, per running flash sale (M2).",
    ("store_id", "activity_id"),
)
purchases = Counter(
    "qun_campaigns_purchases_total",
    "Purchase outcomes: purchased, replayed, or refused by a SPEC rule (one count per failed rule).",
    ("sale", "outcome", "rule"),
)
sold_out = Counter("qun_campaigns_sold_out_total", "Purchases that took an item's last unit (M2).", ("sale",))
claims = Counter(
    "qun_campaigns_claims_total",
    "Prize claims: claimed, replayed, or refused by a SPEC rule (one count per failed rule).",
    ("outcome", "rule"),
)
activities = Counter(
    "qun_campaigns_activities_total", "Activity creations by kind and outcome (M11, M13).", ("kind", "outcome", "rule")
)
active_activities = Histogram(
    "qun_campaigns_group_active_activities",
    "Activities a group-set runs at once at the busiest moment of a new activity's window (M11).",
    buckets=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
)
refunds = Counter("qun_campaigns_refunds_total", "Refund ledger entries written (M9).", ("source",))
refunded_fen = Counter("qun_campaigns_refunded_fen_total", "Cash returned to merchants, in fen (M9).")
end_cards = Counter("qun_campaigns_end_cards_total", "Flash-sale end cards posted (M6).")


def sale_label(flash: bool) -> str:
    return "flash" if flash else "normal"


def purchase_refused(flash: bool, rule_ids: Iterable[str]) -> None:
    for rule in rule_ids:
        purchases.labels(sale_label(flash), "refused", rule).inc()


def claim_refused(rule_ids: Iterable[str]) -> None:
    for rule in rule_ids:
        claims.labels("refused", rule).inc()


def swept(counts: SweepCounts) -> None:
    refunds.labels("expired_red_packet").inc(counts.red_packets_refunded)
    refunds.labels("unclaimed_pool").inc(counts.pools_refunded)
    refunded_fen.inc(counts.refunded_fen)
    end_cards.inc(counts.end_cards_posted)
    for activity_id in counts.ended_flash_sales:
        forget_flash_sale(activity_id)


def forget_flash_sale(activity_id: str) -> None:
    """Drops the stock gauge of a flash sale that ended (whatever its store label)."""
    for labels in list(_stock_labels):
        if labels[1] == activity_id:
            flash_sale_stock_left.remove(*labels)
            _stock_labels.discard(labels)


_stock_labels: set[tuple[str, str]] = set()


def flash_stock(store_id: str, activity_id: str, stock: int) -> None:
    flash_sale_stock_left.labels(store_id, activity_id).set(stock)
    _stock_labels.add((store_id, activity_id))


def tracked_flash_sales() -> list[tuple[str, str]]:
    return sorted(_stock_labels)


def _declared_kinds() -> None:
    """Every kind in service has its series from the start, so one nobody created yet reads 0, not absent."""
    for declared in DECLARATIONS:
        if not declared.retired:
            activities.labels(declared.kind.value, "created", "")


_declared_kinds()
