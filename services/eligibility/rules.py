"""The creation (E) and join (C) rules of SPEC as plain functions.

Every function takes plain facts and the numbers of ``services.common.rules``
(never literals) and returns the ``Failure`` of each rule that refuses, so a
caller can report all of them at once (SPEC E6, C14, X1). Time windows take
"now" as an argument; the servicer reads it from its ``Clock``.

Over 400 lines on purpose: one plain function per SPEC rule of creating (E) and joining (C), scored as one module by the
mutation tests (``tests/mutation``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

from dateutil.relativedelta import relativedelta

from services.common import passwords
from services.common.calendar import MarketCalendar
from services.common.errors import Failure
from services.common.rules import CreateRules, JoinRules, PushRules
from services.eligibility.domain import (
    THRESHOLDS_BY_KIND,
    Account,
    ContentLevel,
    CreateFacts,
    CrowdThreshold,
    FanLevelThreshold,
    FollowThreshold,
    GroupKind,
    JoinFacts,
    JoinQuery,
    ListingSource,
    PasswordThreshold,
    PlatformListing,
    Role,
    SpendThreshold,
    Store,
    Threshold,
)

# --- Windows -----------------------------------------------------------------


def paid_orders_window_start(now: datetime, rules: CreateRules) -> datetime:
    """E2: orders paid at or after this instant, and not after ``now``, count."""
    return now - timedelta(days=rules.paid_orders_window_days)


def spend_window_start(now: datetime, rules: JoinRules) -> datetime:
    """C9 spend: orders paid at or after this instant, and not after ``now``, count."""
    return now - timedelta(days=rules.spend_window_days)


def content_level_visible_before(now: datetime, rules: CreateRules, market: MarketCalendar) -> datetime:
    """E3: updates made before this instant are visible to the check at ``now``.

    T+2 counts marketplace days (D1): an update on day U is visible from the
    start of day U + delay, so at ``now`` every update made before the day
    after (today − delay) is.
    """
    return market.day_start(market.day(now) - timedelta(days=rules.content_level_delay_days - 1))


def content_level_visible_from(update: ContentLevel, rules: CreateRules, market: MarketCalendar) -> datetime:
    """E3: an update on marketplace day U counts from 00:00 of day U + delay (Aug 22 → Aug 24)."""
    return market.day_start(market.days_after(update.updated_at, rules.content_level_delay_days))


@dataclass(frozen=True)
class ContentLevelView:
    """The 微淘 level as the creation check sees it (SPEC E3)."""

    level: int
    # The earliest update not yet visible that would meet the bar, if any.
    pending: ContentLevel | None = None


def content_level_as_seen(
    history: Iterable[ContentLevel], now: datetime, rules: CreateRules, market: MarketCalendar
) -> ContentLevelView:
    """E3: the newest update visible at ``now`` (none: L0) and the next one that would meet E2."""
    visible: ContentLevel | None = None
    pending: ContentLevel | None = None
    for update in history:
        if content_level_visible_from(update, rules, market) <= now:
            if visible is None or update.updated_at > visible.updated_at:
                visible = update
        elif update.level >= rules.min_content_level and (pending is None or update.updated_at < pending.updated_at):
            pending = update
    return ContentLevelView(visible.level if visible else 0, pending)


# --- Creating groups (E) -------------------------------------------------------


def e1_main_account(account: Account, store: Store | None) -> list[Failure]:
    """E1: only the store's main account creates store groups (the store fact must agree)."""
    figures = {"account_id": account.account_id, "role": account.role.value}
    if account.role is not Role.STORE_MAIN:
        what = "a sub-account" if account.role is Role.STORE_SUB else f"a {account.role.value.replace('_', ' ')}"
        message = f"account {account.account_id} is {what}; only a store's main account creates store groups"
    elif store is None:
        message = f"store {account.store_id or '(none)'} of account {account.account_id} is unknown"
    elif store.main_account_id != account.account_id:
        figures["main_account_id"] = store.main_account_id
        message = f"store {store.store_id}'s main account is {store.main_account_id}, not {account.account_id}"
    else:
        return []
    return [Failure("E1", "NOT_STORE_MAIN_ACCOUNT", message, figures)]


def e2_store_operating(store_id: str, store: Store | None) -> list[Failure]:
    """E2: the store operates normally (an unreported store does not)."""
    if store is not None and store.operating_normally:
        return []
    status = "has no reported status" if store is None else "is not operating normally"
    return [Failure("E2", "STORE_NOT_OPERATING", f"store {store_id} {status}", {"store_id": store_id})]


def e2_paid_orders(paid_orders: int, rules: CreateRules) -> list[Failure]:
    """E2: at least ``min_paid_orders`` paid orders in the last ``paid_orders_window_days``."""
    if paid_orders >= rules.min_paid_orders:
        return []
    days = rules.paid_orders_window_days
    return [
        Failure(
            "E2",
            "NOT_ENOUGH_PAID_ORDERS",
            f"orders_{days}d {paid_orders} < {rules.min_paid_orders}",
            {"paid_orders": str(paid_orders), "required": str(rules.min_paid_orders), "window_days": str(days)},
        )
    ]


def e2_content_level(
    history: Iterable[ContentLevel], now: datetime, rules: CreateRules, market: MarketCalendar
) -> list[Failure]:
    """E2: 微淘 level ≥ ``min_content_level`` as seen under E3's delay.

    The unmet condition is E2's either way; when a newer level would meet the
    bar but is not visible yet (E3), the reason and figures say from when it
    counts.
    """
    seen = content_level_as_seen(history, now, rules, market)
    if seen.level >= rules.min_content_level:
        return []
    figures = {"content_level": str(seen.level), "required": str(rules.min_content_level)}
    if seen.pending is not None:
        visible_from = content_level_visible_from(seen.pending, rules, market)
        figures["pending_level"] = str(seen.pending.level)
        figures["visible_from"] = visible_from.isoformat()
        return [
            Failure(
                "E2",
                "CONTENT_LEVEL_NOT_YET_VISIBLE",
                f"微淘 L{seen.level} < L{rules.min_content_level}; L{seen.pending.level} "
                f"(updated {market.show(seen.pending.updated_at)}) counts from {market.show(visible_from)} (E3)",
                figures,
            )
        ]
    return [
        Failure("E2", "CONTENT_LEVEL_TOO_LOW", f"微淘 L{seen.level} < L{rules.min_content_level}", figures),
    ]


def e4_streamer(account: Account, store: Store | None) -> list[Failure]:
    """E4: a streamer permitted to broadcast creates fan groups; a store's streamer needs its store's owner."""
    figures = {"account_id": account.account_id, "role": account.role.value}
    if account.role is not Role.STREAMER:
        message = f"account {account.account_id} is not a streamer; only streamers create live fan groups"
        return [Failure("E4", "NOT_A_STREAMER", message, figures)]
    if not account.broadcast_permitted:
        message = f"streamer {account.account_id} is not permitted to broadcast"
        return [Failure("E4", "NOT_PERMITTED_TO_BROADCAST", message, figures)]
    if account.store_id and store is None:
        figures["store_id"] = account.store_id
        message = f"store {account.store_id} of streamer {account.account_id} is unknown, so is its owner (R1)"
        return [Failure("E4", "OWNER_UNKNOWN", message, figures)]
    return []


@dataclass(frozen=True)
class CreateDecision:
    """Every failed E rule, and who would own the group-set (SPEC E4, E6, R1)."""

    failures: tuple[Failure, ...]
    owner_account_id: str = ""
    store_id: str = ""
    streamer_id: str = ""
    creator_becomes_admin: bool = False

    @property
    def allowed(self) -> bool:
        return not self.failures


def check_create(
    kind: GroupKind, facts: CreateFacts, now: datetime, rules: CreateRules, market: MarketCalendar
) -> CreateDecision:
    """E1–E6: every failed condition at once, with its figures.

    E5: the group level (L0–L4) plays no part — an L0 store creates groups.
    """
    account, store = facts.account, facts.store
    owner = store.main_account_id if store is not None else ""
    if kind is GroupKind.STORE:
        failures = e1_main_account(account, store)
        if account.store_id:
            failures += e2_store_operating(account.store_id, store)
            failures += e2_paid_orders(facts.paid_orders, rules)
            failures += e2_content_level(facts.content_levels, now, rules, market)
        return CreateDecision(tuple(failures), owner_account_id=owner, store_id=account.store_id)
    failures = e4_streamer(account, store)
    if account.role is not Role.STREAMER:
        return CreateDecision(tuple(failures))
    if account.store_id:
        return CreateDecision(
            tuple(failures),
            owner_account_id=owner,
            store_id=account.store_id,
            streamer_id=account.account_id,
            creator_becomes_admin=True,
        )
    return CreateDecision(tuple(failures), owner_account_id=account.account_id, streamer_id=account.account_id)


# --- Joining (C) -----------------------------------------------------------------


def c1_real_name(facts: JoinFacts) -> list[Failure]:
    """C1: the consumer is real-name verified (no fact: not verified)."""
    if facts.real_name_verified:
        return []
    return [Failure("C1", "NOT_REAL_NAME_VERIFIED", "not real-name verified", {"real_name_verified": "false"})]


def below_score_bar(facts: JoinFacts, rules: JoinRules) -> bool:
    """C3: below the 淘气值 bar — messages hidden — whether or not exempt from C2."""
    return facts.taoqi_score < rules.min_taoqi_score


def c2_taoqi_score(facts: JoinFacts, exempt: bool, rules: JoinRules) -> list[Failure]:
    """C2: 淘气值 ≥ ``min_taoqi_score`` unless owner or admin (no score fact: 0)."""
    if exempt or not below_score_bar(facts, rules):
        return []
    return [
        Failure(
            "C2",
            "TAOQI_SCORE_TOO_LOW",
            f"淘气值 {facts.taoqi_score} < {rules.min_taoqi_score}",
            {"taoqi_score": str(facts.taoqi_score), "required": str(rules.min_taoqi_score)},
        )
    ]


def c4_platform_blacklist(listing: PlatformListing | None) -> list[Failure]:
    """C4: not on the platform blacklist; says when C6 or C7 put the consumer there."""
    if listing is None:
        return []
    figures = {"source": listing.source.value}
    if listing.source is ListingSource.C6:
        figures["merchants"] = str(listing.evidence)
        message = f"on the platform blacklist (C6: blacklisted by {listing.evidence} merchants)"
    elif listing.source is ListingSource.C7:
        figures["blacklisted_invitees"] = str(listing.evidence)
        message = f"on the platform blacklist (C7: {listing.evidence} of the accounts it invited are blacklisted)"
    else:
        message = "on the platform blacklist"
    return [Failure("C4", "PLATFORM_BLACKLISTED", message, figures)]


def c5_merchant_blacklist(store_id: str, on_store_blacklist: bool) -> list[Failure]:
    """C5: not on this store's blacklist."""
    if not store_id or not on_store_blacklist:
        return []
    return [Failure("C5", "MERCHANT_BLACKLISTED", f"on store {store_id}'s blacklist", {"store_id": store_id})]


def c6_escalates(merchants_listing: int, rules: JoinRules) -> bool:
    """C6: blacklisted by ``merchant_blacklists_to_platform`` or more distinct merchants."""
    return merchants_listing >= rules.merchant_blacklists_to_platform


def c7_escalates(blacklisted_invitees: int, rules: JoinRules) -> bool:
    """C7: more than ``blacklisted_invitees_to_platform`` distinct invitees blacklisted."""
    return blacklisted_invitees > rules.blacklisted_invitees_to_platform


def c8_seller_account(account: Account, store_id: str) -> list[Failure]:
    """C8: a seller account cannot join a group of a different store."""
    seller_store = account.seller_store_id
    if not store_id or not seller_store or seller_store == store_id:
        return []
    return [
        Failure(
            "C8",
            "SELLER_ACCOUNT",
            f"seller account of store {seller_store} cannot join groups of store {store_id}",
            {"own_store_id": seller_store, "store_id": store_id},
        )
    ]


def yuan(fen: int) -> str:
    """Fen as a yuan amount with two decimals, exactly (no floats)."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def c9_store_threshold(
    threshold: Threshold, facts: JoinFacts, store_id: str, supplied_password: str, rules: JoinRules
) -> list[Failure]:
    """C9: follow, spend in the window, password, or crowd membership."""
    if isinstance(threshold, FollowThreshold):
        if facts.follows_store:
            return []
        return [Failure("C9", "NOT_FOLLOWING", f"does not follow store {store_id}", {"store_id": store_id})]
    if isinstance(threshold, SpendThreshold):
        if facts.spend_fen >= threshold.min_spend_fen:
            return []
        days = rules.spend_window_days
        return [
            Failure(
                "C9",
                "NOT_ENOUGH_SPEND",
                f"spent ¥{yuan(facts.spend_fen)} < ¥{yuan(threshold.min_spend_fen)} with store {store_id} "
                f"in the last {days} days",
                {
                    "spend_fen": str(facts.spend_fen),
                    "required_fen": str(threshold.min_spend_fen),
                    "spend_yuan": yuan(facts.spend_fen),
                    "required_yuan": yuan(threshold.min_spend_fen),
                    "window_days": str(days),
                },
            )
        ]
    if isinstance(threshold, PasswordThreshold):
        if supplied_password and passwords.verify(supplied_password, threshold.digest):
            return []
        return [Failure("C9", "WRONG_PASSWORD", "the group password does not match", {})]
    if isinstance(threshold, CrowdThreshold):
        if facts.in_crowd:
            return []
        return [
            Failure(
                "C9",
                "NOT_IN_CROWD",
                f"not in crowd {threshold.crowd_id} of store {store_id}",
                {"crowd_id": threshold.crowd_id, "store_id": store_id},
            )
        ]
    raise ValueError(f"not a store-group threshold: {threshold!r}")


def c10_fan_level(threshold: FanLevelThreshold, facts: JoinFacts, streamer_id: str) -> list[Failure]:
    """C10: fan level with the streamer ≥ the threshold (NONE < IRON < DIAMOND < BELOVED)."""
    if facts.fan_level >= threshold.min_level:
        return []
    have, need = facts.fan_level.name.lower(), threshold.min_level.name.lower()
    return [
        Failure(
            "C10",
            "FAN_LEVEL_TOO_LOW",
            f"fan level {have} < {need} with streamer {streamer_id}",
            {"fan_level": facts.fan_level.name, "required": threshold.min_level.name, "streamer_id": streamer_id},
        )
    ]


@dataclass(frozen=True)
class WhatIf:
    members_failing: int
    newly_qualifying: int
    known_consumers: int


def what_if(members: set[str], known: set[str], meets_current: set[str], meets_new: set[str]) -> WhatIf:
    """X2: members who would not meet the new threshold (they stay, C11), and known
    non-members who meet the new one but not the current one."""
    return WhatIf(
        members_failing=len(members - meets_new),
        newly_qualifying=len((meets_new - meets_current) - members),
        known_consumers=len(known),
    )


def threshold_fits(kind: GroupKind, threshold: Threshold) -> bool:
    """Follow/spend/password/crowd are store-group thresholds; fan level is live (SPEC C9, C10)."""
    return isinstance(threshold, THRESHOLDS_BY_KIND[kind])


@dataclass(frozen=True)
class JoinDecision:
    failures: tuple[Failure, ...]
    below_score_bar: bool

    @property
    def allowed(self) -> bool:
        return not self.failures


def check_join(query: JoinQuery, facts: JoinFacts, rules: JoinRules) -> JoinDecision:
    """C1–C10: every failed rule at once (C14), plus the C3 flag."""
    if not threshold_fits(query.kind, query.threshold):
        raise ValueError(f"{type(query.threshold).__name__} does not fit a {query.kind.value} group")
    failures: list[Failure] = [
        *c1_real_name(facts),
        *c2_taoqi_score(facts, query.exempt_from_score, rules),
        *c4_platform_blacklist(facts.platform_listing),
        *c5_merchant_blacklist(query.store_id, facts.on_store_blacklist),
        *c8_seller_account(facts.account, query.store_id),
    ]
    if isinstance(query.threshold, FanLevelThreshold):
        failures += c10_fan_level(query.threshold, facts, query.streamer_id)
    else:
        failures += c9_store_threshold(query.threshold, facts, query.store_id, query.supplied_password, rules)
    return JoinDecision(tuple(failures), below_score_bar(facts, rules))


# --- Push facts (P1–P3) ---------------------------------------------------------


CACHED_DAYS = 8192  # the half-year arithmetic of about 20 years of days, kept once computed


def old_customer_first_day(today: date, rules: PushRules) -> date:
    """P3: the first marketplace day of "the last half year" that ends today.

    The same day ``old_customer_window_months`` calendar months earlier, clipped
    to the shorter month's last day (Aug 31 → Feb 28), as ``relativedelta``
    counts. P3 is counted in whole marketplace days (D1): an order counts on
    every day whose half year holds the day it was paid.
    """
    return _months_before(today, rules.old_customer_window_months)


@lru_cache(maxsize=CACHED_DAYS)
def _months_before(day: date, months: int) -> date:
    """Cached: a recount asks it for the same few hundred days of every buyer."""
    earlier: date = day - relativedelta(months=months)
    return earlier


def old_customer_window_start(now: datetime, rules: PushRules, market: MarketCalendar) -> datetime:
    """P3: orders paid at or after this instant count today: 00:00 local of the half year's first day."""
    return market.day_start(old_customer_first_day(market.day(now), rules))


def broadcast_window_start(now: datetime, rules: PushRules) -> datetime:
    """P2 tier 1: broadcasts published at or after this instant, and not after ``now``, count."""
    return now - timedelta(days=rules.broadcast_window_days)


def is_old_customer(paid_times: Iterable[datetime], now: datetime, rules: PushRules, market: MarketCalendar) -> bool:
    """P3: bought on at least ``old_customer_min_days`` different marketplace days of the half year ending today.

    The definition the stored counts (``old_customer_spans``) and the recall
    audience's SQL are held to in their tests.
    """
    today = market.day(now)
    first = old_customer_first_day(today, rules)
    days = {market.day(t) for t in paid_times}
    return sum(1 for day in days if first <= day <= today) >= rules.old_customer_min_days


def last_day_counting(day: date, rules: PushRules) -> date:
    """P3: the last marketplace day whose half year still holds ``day``."""
    return _last_day_counting(day, rules.old_customer_window_months)


@lru_cache(maxsize=CACHED_DAYS)
def _last_day_counting(day: date, months: int) -> date:
    # ``day`` + ``months`` reaches back to ``day`` or, clipped to a shorter month, to a day or
    # three before it (Feb 28 + 6 months = Aug 28, whose half year begins Feb 28; so do Aug 29–31).
    last: date = day + relativedelta(months=months)
    while _months_before(last + timedelta(days=1), months) <= day:
        last += timedelta(days=1)
    return last


def old_customer_spans(order_days: Iterable[date], rules: PushRules) -> list[tuple[date, date]]:
    """P3 over time: the runs ``[first, end)`` of marketplace days on which a buyer with these order days is old.

    Whether a buyer is old changes only on a day an order was paid (one more
    day in the window) or the day after the last day counting one (one day
    fewer), so those days are the only ones looked at.
    """
    days = sorted(set(order_days))
    if not days:
        return []

    def old_on(today: date) -> bool:
        first = old_customer_first_day(today, rules)
        return bisect_right(days, today) - bisect_left(days, first) >= rules.old_customer_min_days

    changes = sorted(set(days) | {last_day_counting(day, rules) + timedelta(days=1) for day in days})
    spans: list[tuple[date, date]] = []
    opened: date | None = None
    for day in changes:
        old = old_on(day)
        if old and opened is None:
            opened = day
        elif not old and opened is not None:
            spans.append((opened, day))
            opened = None
    return spans
