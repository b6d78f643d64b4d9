"""The kinds of campaign activity, declared once: each kind's rule, spec, validation and traits (SPEC M1–M13).

A plain module (no I/O), so every layer reads the same table: the rules
(``rules.KIND_RULE``, ``RETIRED_TOOLS``, ``PRIZE_ACTIVITIES``), the
servicer's validation of ``CreateActivityRequest`` (the ``spec`` oneof field
a kind is created with, and what its spec must hold), the repositories (which
kinds sell an item, post an end card), the conversions (a kind's proto value is
``ACTIVITY_KIND_<NAME>`` in the internal and the public contract alike), the
metrics' labels, and the gateway (which kinds go to live fan groups only).

A new kind is a member of ``ActivityKind`` and a row of ``DECLARATIONS``
here (with its spec's validator), its spec message and enum value in the two
protos, and — when it brings a rule of its own — that rule in ``rules``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from qun.campaigns.v1 import campaigns_pb2 as pb
from services.common.rules import BoundsRules
from services.common.validation import MAX_NAME_CHARS, Fields

MIN_OPTIONS = 2  # a vote chooses between at least two options
MIN_GROUP_SIZE = 2  # a group buy is bought together by at least two people


class ActivityKind(StrEnum):
    FLASH_SALE = "flash_sale"
    RED_PACKET_FOUNTAIN = "red_packet_fountain"
    GROUP_BUY = "group_buy"
    VOTING = "voting"
    CHECK_IN = "check_in"
    LUCKY_RED_PACKET = "lucky_red_packet"
    STORE_RED_PACKET = "store_red_packet"
    TASK_REWARD = "task_reward"


class PrizeKind(StrEnum):
    """What a pool of a prize activity holds (M7)."""

    CASH_RED_PACKET = "cash_red_packet"
    STORE_COUPON = "store_coupon"


PRIZE_FROM_PROTO = {
    pb.PRIZE_KIND_CASH_RED_PACKET: PrizeKind.CASH_RED_PACKET,
    pb.PRIZE_KIND_STORE_COUPON: PrizeKind.STORE_COUPON,
}


@dataclass(frozen=True)
class NewPool:
    kind: PrizeKind
    value_fen: int
    count: int
    per_user_limit: int
    expires_at: datetime


@dataclass(frozen=True)
class SpecFields:
    """What a kind's spec adds to a new activity, validated."""

    item_id: str = ""
    price_fen: int = 0
    group_size: int = 0
    options: tuple[str, ...] = ()
    pools: tuple[NewPool, ...] = ()


# (the fields being checked, the kind's spec message, the bounds (D2), when the activity starts) → its fields.
Validator = Callable[[Fields, Any, BoundsRules, datetime], SpecFields]


def no_spec(f: Fields, spec: Any, bounds: BoundsRules, starts_at: datetime) -> SpecFields:
    """A kind whose spec holds nothing (check-in, the retired tools)."""
    return SpecFields()


def flash_sale_spec(f: Fields, spec: pb.FlashSaleSpec, bounds: BoundsRules, starts_at: datetime) -> SpecFields:
    f.identifier("flash_sale.item_id", spec.item_id)
    f.within_bound("flash_sale.flash_price_fen", spec.flash_price_fen, bounds, "money_fen")
    return SpecFields(item_id=spec.item_id, price_fen=spec.flash_price_fen)


def group_buy_spec(f: Fields, spec: pb.GroupBuySpec, bounds: BoundsRules, starts_at: datetime) -> SpecFields:
    f.identifier("group_buy.item_id", spec.item_id)
    f.within_bound("group_buy.group_price_fen", spec.group_price_fen, bounds, "money_fen")
    if not MIN_GROUP_SIZE <= spec.group_size <= bounds.group_buy_size:
        f.fail(
            "group_buy.group_size",
            f"between {MIN_GROUP_SIZE} and {bounds.group_buy_size} (bounds.group_buy_size), got {spec.group_size}",
        )
    return SpecFields(item_id=spec.item_id, price_fen=spec.group_price_fen, group_size=spec.group_size)


def voting_spec(f: Fields, spec: pb.VotingSpec, bounds: BoundsRules, starts_at: datetime) -> SpecFields:
    options = list(spec.options)
    if not MIN_OPTIONS <= len(options) <= bounds.vote_options:
        f.fail("voting.options", f"between {MIN_OPTIONS} and {bounds.vote_options} options, got {len(options)}")
    for i, option in enumerate(options):
        f.text(f"voting.options[{i}]", option, max_chars=MAX_NAME_CHARS, required=True)
    return SpecFields(options=tuple(options))


def lucky_red_packet_spec(
    f: Fields, spec: pb.LuckyRedPacketSpec, bounds: BoundsRules, starts_at: datetime
) -> SpecFields:
    """One pool of cash red packets, one per member."""
    f.within_bound("lucky_red_packet.value_fen", spec.value_fen, bounds, "prize_fen")
    f.within_bound("lucky_red_packet.count", spec.count, bounds, "pool_prizes")
    expires = f.instant_field(spec, "expires_at", "lucky_red_packet.")
    if expires is None:
        return SpecFields()
    if expires <= starts_at:
        f.fail("lucky_red_packet.expires_at", "must be after starts_at")
    return SpecFields(pools=(NewPool(PrizeKind.CASH_RED_PACKET, spec.value_fen, spec.count, 1, expires),))


def fountain_spec(f: Fields, spec: pb.FountainSpec, bounds: BoundsRules, starts_at: datetime) -> SpecFields:
    """Pools of cash red packets and store coupons, each with its per-user limit.

    A pool's value (prize × prizes) and the fountain's (× pools) fit 64 bits: OVERFLOW_GUARDS.
    """
    pools: list[NewPool] = []
    specs = list(spec.pools)
    if not 1 <= len(specs) <= bounds.pools_per_activity:
        f.fail("red_packet_fountain.pools", f"between 1 and {bounds.pools_per_activity} pools, got {len(specs)}")
        specs = []
    for i, p in enumerate(specs):
        where = f"red_packet_fountain.pools[{i}]"
        prize = f.enum(f"{where}.kind", p.kind, pb.PrizeKind, allowed=tuple(PRIZE_FROM_PROTO))
        f.within_bound(f"{where}.value_fen", p.value_fen, bounds, "prize_fen")
        f.within_bound(f"{where}.count", p.count, bounds, "pool_prizes")
        f.within_bound(f"{where}.per_user_limit", p.per_user_limit, bounds, "pool_prizes")
        expires = f.instant_field(p, "expires_at", f"{where}.")
        if expires is not None and expires <= starts_at:
            f.fail(f"{where}.expires_at", "must be after starts_at")
        if prize in PRIZE_FROM_PROTO and expires is not None:
            pools.append(NewPool(PRIZE_FROM_PROTO[prize], p.value_fen, p.count, p.per_user_limit, expires))
    return SpecFields(pools=tuple(pools))


@dataclass(frozen=True)
class ActivityKindDeclaration:
    kind: ActivityKind
    # The rule cited when the activity is not running or the caller is not a member (M6 for a flash sale …).
    rule_id: str
    # The ``CreateActivityRequest.spec`` oneof field a kind is created with (the same name in both contracts).
    spec: str
    validate: Validator = no_spec
    # M13: the name of a retired tool, whose creation is refused; "" for a kind in service.
    retired: str = ""
    # Consumers claim its prizes from pools (M7, M13).
    prizes: bool = False
    # It sells an item (its spec names one), which must exist in the store.
    sells_item: bool = False
    # M1: it sells single-SKU items at one price only.
    one_price_item: bool = False
    # M5: its price is for the group's members only (shown as members_only).
    members_only: bool = False
    # M6: an end card with the units sold is posted when it ends.
    end_card: bool = False
    # M13: it goes to a live fan group's members only (iron fans and above); the gateway checks the set.
    live_groups_only: bool = False

    @property
    def proto_name(self) -> str:
        """The kind's value in ``qun.campaigns.v1.ActivityKind`` and ``qun.gateway.v1.ActivityKind``."""
        return f"ACTIVITY_KIND_{self.kind.name}"


DECLARATIONS: tuple[ActivityKindDeclaration, ...] = (
    ActivityKindDeclaration(
        ActivityKind.FLASH_SALE,
        "M6",
        "flash_sale",
        flash_sale_spec,
        sells_item=True,
        one_price_item=True,
        members_only=True,
        end_card=True,
    ),
    ActivityKindDeclaration(ActivityKind.RED_PACKET_FOUNTAIN, "M7", "red_packet_fountain", fountain_spec, prizes=True),
    ActivityKindDeclaration(ActivityKind.GROUP_BUY, "M11", "group_buy", group_buy_spec, sells_item=True),
    ActivityKindDeclaration(ActivityKind.VOTING, "M13", "voting", voting_spec),
    ActivityKindDeclaration(ActivityKind.CHECK_IN, "M13", "check_in"),
    ActivityKindDeclaration(
        ActivityKind.LUCKY_RED_PACKET,
        "M13",
        "lucky_red_packet",
        lucky_red_packet_spec,
        prizes=True,
        live_groups_only=True,
    ),
    ActivityKindDeclaration(ActivityKind.STORE_RED_PACKET, "M13", "store_red_packet", retired="store red packets"),
    ActivityKindDeclaration(ActivityKind.TASK_REWARD, "M13", "task_reward", retired="task rewards"),
)
_BY_KIND = {d.kind: d for d in DECLARATIONS}
_BY_SPEC = {d.spec: d for d in DECLARATIONS}


def declaration(kind: ActivityKind | str) -> ActivityKindDeclaration:
    """The declaration of a kind (as the enum or as stored)."""
    return _BY_KIND[ActivityKind(kind)]


def of_spec(spec: str | None) -> ActivityKindDeclaration | None:
    """The kind a ``CreateActivityRequest`` is for, by the spec field it set; None for none or an unknown one."""
    return _BY_SPEC.get(spec or "")


def kinds_where(trait: Callable[[ActivityKindDeclaration], bool]) -> frozenset[ActivityKind]:
    """The kinds whose declaration has ``trait``."""
    return frozenset(d.kind for d in DECLARATIONS if trait(d))
