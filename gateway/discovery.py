"""The official modules' choices and the message policy, as plain functions (SPEC V2–V6, C3, R4).

They span two services — the groups service knows the sets, the eligibility
service whether a consumer meets each threshold — so they run in the gateway,
over plain data the gateway has gathered.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.common.calendar import MarketCalendar
from services.common.errors import Failure
from services.common.rules import Rules

THRESHOLD_RULES = frozenset({"C9", "C10"})


class ThresholdKind(enum.StrEnum):
    FOLLOW = "follow"
    SPEND = "spend"
    PASSWORD = "password"
    CROWD = "crowd"
    FAN_LEVEL = "fan_level"


@dataclass(frozen=True)
class Candidate:
    """One public group-set of the store, with the consumer's eligibility verdict on it."""

    group_set_id: str
    name: str
    threshold: ThresholdKind
    member_count: int
    full: bool
    failures: tuple[Failure, ...]

    @property
    def meets_threshold(self) -> bool:
        """The threshold alone (V2, V3); a password is a thing typed, not a fact to meet."""
        if self.threshold is ThresholdKind.PASSWORD:
            return True
        return not any(f.rule_id in THRESHOLD_RULES for f in self.failures)


@dataclass(frozen=True)
class Entry:
    candidate: Candidate
    shown: bool
    reasons: tuple[Failure, ...] = ()


@dataclass(frozen=True)
class Module:
    entries: tuple[Entry, ...]
    module_reasons: tuple[Failure, ...] = field(default_factory=tuple)

    @property
    def shown(self) -> list[Candidate]:
        return [e.candidate for e in self.entries if e.shown]


def _in_store_group(consumer_in_store_group: bool) -> list[Failure]:
    if not consumer_in_store_group:
        return []
    return [Failure("V5", "ALREADY_IN_STORE_GROUP", "already in a group of this store: no other group is offered", {})]


def _threshold_entries(candidates: Sequence[Candidate]) -> tuple[Entry, ...]:
    entries = [
        Entry(c, c.meets_threshold, tuple(f for f in c.failures if f.rule_id in THRESHOLD_RULES)) for c in candidates
    ]
    return tuple(sorted(entries, key=lambda e: not e.shown))


def store_page(
    candidates: Sequence[Candidate],
    *,
    consumer_in_store_group: bool,
    first_group_created_at: datetime | None,
    now: datetime,
    market: MarketCalendar,
) -> Module:
    """V1 (public sets only are candidates), V2 (threshold met; first group today → from tomorrow), V5.

    "Today" is the marketplace's day (D1): a first group made at 23:30 in China shows from 00:00 there.
    """
    reasons = _in_store_group(consumer_in_store_group)
    if first_group_created_at is not None and market.day(first_group_created_at) == market.day(now):
        shows_from = market.next_day_start(first_group_created_at)
        reasons.append(
            Failure(
                "V2",
                "FIRST_GROUP_CREATED_TODAY",
                f"the store created its first group today: the module appears from {market.show(shows_from)}",
                {"first_group_created_at": first_group_created_at.isoformat(), "shows_from": shows_from.isoformat()},
            )
        )
    if reasons:
        return Module(tuple(Entry(c, False) for c in candidates), tuple(reasons))
    return Module(_threshold_entries(candidates))


def item_page(
    candidates: Sequence[Candidate],
    *,
    in_group_buy: bool,
    consumer_in_store_group: bool,
    group_buy_activity_id: str = "",
) -> Module:
    """V3: threshold met, never on a group-buy item (the caller says so, or qun runs a group buy of it); V5."""
    reasons = _in_store_group(consumer_in_store_group)
    if in_group_buy or group_buy_activity_id:
        figures = {"activity_id": group_buy_activity_id} if group_buy_activity_id else {}
        reasons.append(
            Failure("V3", "ITEM_IN_GROUP_BUY", "the item is in a group buy (拼团): no group module", figures)
        )
    if reasons:
        return Module(tuple(Entry(c, False) for c in candidates), tuple(reasons))
    return Module(_threshold_entries(candidates))


# V4: a spend threshold wins over a follow threshold; the others after them.
THRESHOLD_PREFERENCE = {ThresholdKind.SPEND: 0, ThresholdKind.FOLLOW: 1, ThresholdKind.CROWD: 2}


def recommend(candidates: Sequence[Candidate], *, consumer_in_store_group: bool) -> tuple[Candidate | None, Module]:
    """V4, V5, V5a: the one group that suits best, or none, with why each was passed over."""
    reasons = _in_store_group(consumer_in_store_group)
    if reasons:
        return None, Module(tuple(Entry(c, False) for c in candidates), tuple(reasons))
    entries: list[Entry] = []
    eligible: list[Candidate] = []
    for c in candidates:
        passed_over: list[Failure] = []
        if c.threshold is ThresholdKind.PASSWORD:
            passed_over.append(Failure("V5a", "PASSWORD_GROUP", "password groups are never recommended", {}))
        if c.full:
            passed_over.append(Failure("V5a", "GROUP_SET_FULL", "the group-set is full", {}))
        passed_over.extend(c.failures)
        if passed_over:
            entries.append(Entry(c, False, tuple(passed_over)))
        else:
            eligible.append(c)
    ranked = sorted(
        eligible, key=lambda c: (THRESHOLD_PREFERENCE.get(c.threshold, len(THRESHOLD_PREFERENCE)), -c.member_count)
    )
    best = ranked[0] if ranked else None
    outranked = Failure("V4", "OUTRANKED", "another group suits this consumer better", {})
    entries.extend(Entry(c, c is best, () if c is best else (outranked,)) for c in ranked)
    return best, Module(tuple(sorted(entries, key=lambda e: not e.shown)))


def post_component_failures(*, caller_is_main_account: bool, is_public: bool) -> list[Failure]:
    """V6: a 微淘 post's group component needs the main account and a public group."""
    failures: list[Failure] = []
    if not caller_is_main_account:
        failures.append(Failure("V6", "NOT_MAIN_ACCOUNT", "only the store's main account adds a group component", {}))
    if not is_public:
        failures.append(Failure("V6", "GROUP_NOT_PUBLIC", "the group-set is not public", {}))
    return failures


class MessageKind(enum.StrEnum):
    TEXT = "text"
    ITEM_SHARE = "item_share"
    VIDEO = "video"


def message_failures(
    rules: Rules,
    *,
    kind: MessageKind,
    sender_is_member: bool,
    sender_is_staff: bool,
    item_known_to_sender: bool,
    video_seconds: int,
) -> list[Failure]:
    """R4: only the streamer/admins share items (ones they browsed, favourited, carted or bought);
    short videos are at most 15 s. Anyone posting must be in the group."""
    failures: list[Failure] = []
    if not (sender_is_member or sender_is_staff):
        failures.append(Failure("R4", "NOT_IN_GROUP", "the sender is not in this group-set", {}))
    if kind is MessageKind.ITEM_SHARE:
        if not sender_is_staff:
            failures.append(Failure("R4", "FANS_CANNOT_SHARE_ITEMS", "only the streamer and admins share items", {}))
        if not item_known_to_sender:
            failures.append(
                Failure(
                    "R4",
                    "ITEM_NOT_FROM_SENDER_HISTORY",
                    "only items the account browsed, favourited, carted or bought are shared",
                    {},
                )
            )
    if kind is MessageKind.VIDEO:
        limit = rules.roles.max_video_seconds
        if video_seconds > limit:
            failures.append(
                Failure(
                    "R4",
                    "VIDEO_TOO_LONG",
                    f"video {video_seconds} s > {limit} s",
                    {"video_seconds": str(video_seconds), "max": str(limit)},
                )
            )
    return failures
