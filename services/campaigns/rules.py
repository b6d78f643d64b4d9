"""The campaigns domain rules as plain functions over plain values.

Flash sale (SPEC M1–M6), red-packet fountain (M7–M10), the cap of activities
per group-set (M11), the trumpet (M12) and the retired tools (M13). Nothing
here knows about gRPC or the database: the repository feeds in what it read
(under its row locks where a cap is decided), so the same functions answer
the read-only PriceOrder and the locked Purchase, and unit tests check them
alone.

Every number comes from ``services.common.rules.Rules``; a refusal is a list
of every failed rule with the figures it compared (SPEC X1).

Over 400 lines on purpose: one plain function per SPEC rule of M1–M13, scored as one module by the mutation
tests (``tests/mutation``); the kinds' declarations are in ``kinds``.

Kept as one module (about 440 lines): every campaigns rule as a plain function, scored whole
by ``make mutation``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from services.campaigns.kinds import DECLARATIONS, ActivityKind, kinds_where
from services.campaigns.kinds import PrizeKind as PrizeKind  # part of the rules' vocabulary: callers name it from here
from services.common.errors import Failure
from services.common.rules import Rules

# Each kind's traits, as ``kinds`` declares them.
RETIRED_TOOLS: dict[ActivityKind, str] = {d.kind: d.retired for d in DECLARATIONS if d.retired}
# Activities whose prizes are claimed from pools (M7, M13).
PRIZE_ACTIVITIES = kinds_where(lambda d: d.prizes)
# The rule that governs each kind: cited when it is not running or the caller is not a member.
KIND_RULE: dict[ActivityKind, str] = {d.kind: d.rule_id for d in DECLARATIONS}


class ClaimState(StrEnum):
    HELD = "held"
    USED = "used"
    REFUNDED = "refunded"  # a cash red packet that expired unused (M9)
    EXPIRED = "expired"  # a store coupon that expired unused


class Platform(StrEnum):
    TAOBAO = "taobao"
    TMALL = "tmall"


class PriceRecord(StrEnum):
    """The marketplace's lowest-price records (M3)."""

    MARKET_30_DAY = "market_30_day"  # Taobao: the 30-day lowest price
    HISTORICAL = "historical"  # Tmall: the historical lowest price
    PROMOTIONAL_30_DAY = "promotional_30_day"  # Tmall: the 30-day lowest promotional price
    JUHUASUAN = "juhuasuan"  # 聚划算 lowest price
    TAOQIANGGOU = "taoqianggou"  # 淘抢购 lowest price


@dataclass(frozen=True)
class ItemFacts:
    platform: Platform
    sku_count: int
    price_min_fen: int
    price_max_fen: int
    stock: int

    @property
    def one_price(self) -> bool:
        return self.price_min_fen == self.price_max_fen


@dataclass(frozen=True)
class Window:
    """When an activity runs: from ``starts_at`` until ``ends_at`` (exclusive)."""

    starts_at: datetime
    ends_at: datetime

    def overlaps(self, other: Window) -> bool:
        return self.starts_at < other.ends_at and other.starts_at < self.ends_at


@dataclass(frozen=True)
class Pricing:
    """What an order costs (M4: every discount stacks with the flash price).

    Every figure fits a signed 64-bit integer (D2, ``OVERFLOW_GUARDS`` in
    ``services.common.rules``, checked when the rules load): the unit price is
    at most ``bounds.money_fen`` and the quantity ``bounds.quantity``, so the
    subtotal is at most their product; each cash red packet, store red packet
    and coupon is at most ``bounds.prize_fen`` and an order lists at most
    ``bounds.order_entries`` of each kind, so the discounts together are at
    most ``prize_fen × order_entries × 3``.
    """

    unit_price_fen: int
    quantity: int
    cash_red_packet_fen: int
    store_red_packet_fen: int
    store_coupon_fen: int
    flash_price: bool

    @property
    def subtotal_fen(self) -> int:
        return self.unit_price_fen * self.quantity

    @property
    def discount_fen(self) -> int:
        return self.cash_red_packet_fen + self.store_red_packet_fen + self.store_coupon_fen

    @property
    def total_fen(self) -> int:
        return max(0, self.subtotal_fen - self.discount_fen)


@dataclass(frozen=True)
class PoolStanding:
    """One pool as a claim sees it: prizes left and what this consumer already took from it."""

    pool_id: str
    remaining: int
    per_user_limit: int
    claimed_by_consumer: int


# -- M1: what a flash sale may sell -----------------------------------------------------------


def flash_sale_item_failures(item: ItemFacts) -> list[Failure]:
    """M1: single-SKU items at one price only; both failures are named when both apply."""
    failures: list[Failure] = []
    if item.sku_count != 1:
        failures.append(
            Failure(
                "M1",
                "MULTI_SKU_ITEM",
                f"a flash sale sells single-SKU items only; this item has {item.sku_count} SKUs",
                {"sku_count": str(item.sku_count)},
            )
        )
    if not item.one_price:
        failures.append(
            Failure(
                "M1",
                "PRICE_RANGE_ITEM",
                f"a flash sale sells items at one price; this item costs {item.price_min_fen}–{item.price_max_fen} fen",
                {"price_min_fen": str(item.price_min_fen), "price_max_fen": str(item.price_max_fen)},
            )
        )
    return failures


# -- M2: one stock for every sale -------------------------------------------------------------


def stock_failures(stock: int, quantity: int) -> list[Failure]:
    """M2: every sale draws on the item's own stock, which never goes below zero."""
    if quantity <= stock:
        return []
    reason = "SOLD_OUT" if stock == 0 else "NOT_ENOUGH_STOCK"
    return [
        Failure(
            "M2",
            reason,
            f"the item has {stock} in stock, {quantity} wanted",
            {"stock": str(stock), "quantity": str(quantity)},
        )
    ]


def stock_limit_failures(stock: int, quantity: int, most: int) -> list[Failure]:
    """D2: an item holds at most ``most`` units (``bounds.stock``); a restock past it adds nothing.

    The bound is what keeps every later sum over the stock inside 64 bits, so
    past it the restock is refused rather than stored.
    """
    if quantity <= most - stock:
        return []
    return [
        Failure(
            "D2",
            "STOCK_LIMIT",
            f"the item has {stock} in stock; {quantity} more would pass the largest stock, {most}",
            {"stock": str(stock), "quantity": str(quantity), "max": str(most)},
        )
    ]


# -- M3: lowest-price bookkeeping -------------------------------------------------------------


def price_records(platform: Platform) -> tuple[tuple[PriceRecord, bool], ...]:
    """M3: which lowest-price records a flash-sale price counts toward, by platform.

    Taobao: not the marketplace's 30-day lowest price. Tmall: not the historical
    lowest price, but the 30-day lowest promotional price. Both: the 聚划算 and
    淘抢购 lowest prices.
    """
    if platform is Platform.TAOBAO:
        own: tuple[tuple[PriceRecord, bool], ...] = ((PriceRecord.MARKET_30_DAY, False),)
    else:
        own = ((PriceRecord.HISTORICAL, False), (PriceRecord.PROMOTIONAL_30_DAY, True))
    return (*own, (PriceRecord.JUHUASUAN, True), (PriceRecord.TAOQIANGGOU, True))


# -- M4, M8: pricing an order -----------------------------------------------------------------


def order_count_failures(rules: Rules, cash_red_packets: int, store_coupons: int) -> list[Failure]:
    """M8: at most 10 cash red packets and at most 1 store coupon per order; the two stack."""
    limits = rules.campaigns
    failures: list[Failure] = []
    if cash_red_packets > limits.max_cash_red_packets_per_order:
        failures.append(
            Failure(
                "M8",
                "TOO_MANY_CASH_RED_PACKETS",
                f"an order uses at most {limits.max_cash_red_packets_per_order} cash red packets, "
                f"this one {cash_red_packets}",
                {"cash_red_packets": str(cash_red_packets), "cap": str(limits.max_cash_red_packets_per_order)},
            )
        )
    if store_coupons > limits.max_store_coupons_per_order:
        failures.append(
            Failure(
                "M8",
                "TOO_MANY_STORE_COUPONS",
                f"an order uses at most {limits.max_store_coupons_per_order} store coupon, this one {store_coupons}",
                {"store_coupons": str(store_coupons), "cap": str(limits.max_store_coupons_per_order)},
            )
        )
    return failures


def price_order(
    *,
    item_price_fen: int,
    flash_price_fen: int | None,
    quantity: int,
    cash_red_packets: Sequence[int] = (),
    store_red_packets: Sequence[int] = (),
    store_coupons: Sequence[int] = (),
) -> Pricing:
    """M4: the flash price stacks with cash red packets, store red packets and store coupons."""
    flash = flash_price_fen is not None
    return Pricing(
        unit_price_fen=flash_price_fen if flash_price_fen is not None else item_price_fen,
        quantity=quantity,
        cash_red_packet_fen=sum(cash_red_packets),
        store_red_packet_fen=sum(store_red_packets),
        store_coupon_fen=sum(store_coupons),
        flash_price=flash,
    )


# -- activity windows, membership (M5, M6) ----------------------------------------------------


def is_running(window: Window, ended_at: datetime | None, now: datetime) -> bool:
    return ended_at is None and window.starts_at <= now < window.ends_at


def running_failures(kind: ActivityKind, window: Window, ended_at: datetime | None, now: datetime) -> list[Failure]:
    """An activity is used only between its start and its end (a flash sale's end is M6)."""
    if is_running(window, ended_at, now):
        return []
    rule = KIND_RULE[kind]
    figures = {"starts_at": window.starts_at.isoformat(), "ends_at": window.ends_at.isoformat(), "now": now.isoformat()}
    if ended_at is None and now < window.starts_at:
        return [Failure(rule, "ACTIVITY_NOT_STARTED", f"the {kind} starts at {window.starts_at.isoformat()}", figures)]
    when = ended_at if ended_at is not None else window.ends_at
    figures["ended_at"] = when.isoformat()
    return [Failure(rule, "ACTIVITY_ENDED", f"the {kind} ended at {when.isoformat()}", figures)]


def membership_failures(kind: ActivityKind, group_member: bool) -> list[Failure]:
    """M5: only the group's members buy at the flash price; the other tools are the group's too."""
    if group_member:
        return []
    if kind is ActivityKind.FLASH_SALE:
        return [Failure("M5", "NOT_GROUP_MEMBER", "the flash price is for group members only (群专享)", {})]
    return [Failure(KIND_RULE[kind], "NOT_GROUP_MEMBER", f"the {kind} is for the group's members only", {})]


# -- M7, M10: claiming prizes -----------------------------------------------------------------


def claim_failures(rules: Rules, held: int, pools: Sequence[PoolStanding]) -> list[Failure]:
    """M10: the wallet is full, or the consumer reached every pool's per-user limit; M7: no prizes left.

    ``pools`` are the pools the claim may draw from; it succeeds when one of
    them has a prize left and is under the consumer's limit.
    """
    failures: list[Failure] = []
    size = rules.campaigns.wallet_size
    if held >= size:
        failures.append(
            Failure(
                "M10",
                "WALLET_FULL",
                f"the coupon wallet holds {held} prizes, at most {size}",
                {"held": str(held), "wallet_size": str(size)},
            )
        )
    under_limit = [p for p in pools if p.claimed_by_consumer < p.per_user_limit]
    if pools and not under_limit:
        limits = ", ".join(f"{p.claimed_by_consumer}/{p.per_user_limit}" for p in pools)
        failures.append(
            Failure(
                "M10",
                "CLAIM_LIMIT_REACHED",
                f"the per-user limit is reached ({limits})",
                {
                    "claimed": str(sum(p.claimed_by_consumer for p in pools)),
                    "limit": str(sum(p.per_user_limit for p in pools)),
                },
            )
        )
    elif under_limit and not any(p.remaining > 0 for p in under_limit):
        failures.append(Failure("M7", "NO_PRIZES_LEFT", "every prize has been claimed", {"remaining": "0"}))
    return failures


def claimable(pools: Iterable[PoolStanding]) -> list[str]:
    """The pools a claim may take from: prizes left and under the consumer's limit."""
    return [p.pool_id for p in pools if p.remaining > 0 and p.claimed_by_consumer < p.per_user_limit]


# -- M11: activities at once ------------------------------------------------------------------


def busiest(windows: Iterable[Window], window: Window) -> int:
    """How many of ``windows`` run at once at the busiest moment inside ``window``."""
    events: list[tuple[datetime, int]] = []
    for other in windows:
        if other.overlaps(window):
            events.append((max(other.starts_at, window.starts_at), 1))
            events.append((min(other.ends_at, window.ends_at), -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end at t frees its slot before a start at t
    most = running = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def activity_cap_failures(rules: Rules, existing: Iterable[Window], window: Window) -> tuple[list[Failure], int]:
    """M11 (every kind counts, M13): at most 10 activities of a group-set at any one time.

    Returns the failures and how many would run at once at the busiest moment
    of the new activity's window, the new one included.
    """
    cap = rules.campaigns.max_active_activities
    at_once = busiest(existing, window)
    if at_once + 1 <= cap:
        return [], at_once + 1
    return [
        Failure(
            "M11",
            "TOO_MANY_ACTIVITIES",
            f"the group already has {at_once} activities at once, at most {cap}",
            {"activities": str(at_once), "cap": str(cap)},
        )
    ], at_once


# -- M12: the trumpet -------------------------------------------------------------------------


def _later_by(instant: datetime, delay: timedelta) -> str:
    """``instant + delay`` as ISO text; an activity starting in the last moments of year 9999 has no such time."""
    last = datetime.max.replace(tzinfo=instant.tzinfo)
    if instant > last - delay:
        return f"after {last.replace(microsecond=0, tzinfo=None).isoformat()}"
    return (instant + delay).isoformat()


def trumpet_failures(
    rules: Rules,
    *,
    group_level: int,
    on_sub_group: bool,
    activity: Window,
    activity_ended_at: datetime | None,
    display_starts_at: datetime,
) -> list[Failure]:
    """M12: group level L3 or L4, on a sub-group, display ≥ 1 minute after the activity starts."""
    limits = rules.campaigns
    failures: list[Failure] = []
    if group_level < limits.trumpet_min_level:
        failures.append(
            Failure(
                "M12",
                "GROUP_LEVEL_TOO_LOW",
                f"the trumpet needs group level L{limits.trumpet_min_level} or higher; the store is L{group_level}",
                {"level": str(group_level), "required": str(limits.trumpet_min_level)},
            )
        )
    if not on_sub_group:
        failures.append(
            Failure("M12", "TRUMPET_ON_SUB_GROUP", "the trumpet is set on a sub-group, not on the group-set", {})
        )
    delay = timedelta(seconds=limits.trumpet_min_delay_seconds)
    if display_starts_at - activity.starts_at < delay:  # a difference: the sum may lie past the last datetime
        earliest = _later_by(activity.starts_at, delay)
        failures.append(
            Failure(
                "M12",
                "TRUMPET_TOO_EARLY",
                f"the trumpet shows from {earliest} at the earliest "
                f"({limits.trumpet_min_delay_seconds} s after the activity starts), not {display_starts_at.isoformat()}",
                {
                    "display_starts_at": display_starts_at.isoformat(),
                    "activity_starts_at": activity.starts_at.isoformat(),
                    "earliest": earliest,
                },
            )
        )
    end = activity_ended_at or activity.ends_at
    if display_starts_at >= end:
        failures.append(
            Failure(
                "M12",
                "TRUMPET_AFTER_ACTIVITY",
                f"the activity ends at {end.isoformat()}, before the trumpet would show",
                {"display_starts_at": display_starts_at.isoformat(), "activity_ends_at": end.isoformat()},
            )
        )
    return failures


# -- M13: retired tools -----------------------------------------------------------------------


def retired_tool_failures(kind: ActivityKind) -> list[Failure]:
    """M13: store red packets and task rewards are retired; creating one is refused."""
    name = RETIRED_TOOLS.get(kind)
    if name is None:
        return []
    return [
        Failure("M13", "TOOL_RETIRED", f"{name} are a retired tool and can no longer be created", {"tool": str(kind)})
    ]


def market_day(rules: Rules, now: datetime) -> str:
    """The marketplace day of a check-in (M13), on the one calendar of D1."""
    return rules.calendar.market.day_key(now)
