"""The eligibility domain's vocabulary: plain frozen dataclasses and enums.

These types know nothing of gRPC or the database, so the rules in
``rules.py`` can be tested as plain functions and the servicer and repository
translate to and from them at their edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum


class Role(StrEnum):
    """What an account is on the marketplace (SPEC §0); stored by value."""

    STORE_MAIN = "store_main"
    STORE_SUB = "store_sub"
    STREAMER = "streamer"
    CONSUMER = "consumer"


class Platform(StrEnum):
    TAOBAO = "taobao"
    TMALL = "tmall"


class Scope(StrEnum):
    """Whose blacklist an entry is on (SPEC C4, C5)."""

    PLATFORM = "platform"
    MERCHANT = "merchant"


class GroupKind(StrEnum):
    STORE = "store"
    LIVE = "live"


class FanLevel(IntEnum):
    """Live fan intimacy, ordered so that ``>=`` reads as "at least" (SPEC C10)."""

    NONE = 0
    IRON = 1
    DIAMOND = 2
    BELOVED = 3


class ListingSource(StrEnum):
    """Why a consumer is on the platform blacklist, so a refusal can say it (SPEC C4)."""

    REPORTED = "reported"  # an upstream platform-scope fact
    C6 = "C6"  # escalated: blacklisted by several merchants
    C7 = "C7"  # escalated: too many of its invitees are blacklisted


# --- Facts, as upstream systems report them (SPEC §0) -----------------------


@dataclass(frozen=True)
class Account:
    account_id: str
    role: Role
    store_id: str = ""
    broadcast_permitted: bool = False
    own_store_id: str = ""

    @property
    def seller_store_id(self) -> str:
        """The store this account sells in, if any (SPEC C8).

        A consumer who opened a store names it in ``own_store_id``; a store's
        main account is by definition that store's seller account.
        """
        if self.own_store_id:
            return self.own_store_id
        return self.store_id if self.role is Role.STORE_MAIN else ""


@dataclass(frozen=True)
class Store:
    store_id: str
    platform: Platform
    main_account_id: str
    operating_normally: bool


@dataclass(frozen=True)
class PaidOrder:
    order_id: str
    store_id: str
    consumer_id: str
    amount_fen: int
    paid_at: datetime


@dataclass(frozen=True)
class ContentLevel:
    """A 微淘 level as computed by the weekly job (SPEC E3)."""

    store_id: str
    level: int
    updated_at: datetime


@dataclass(frozen=True)
class Follow:
    store_id: str
    consumer_id: str
    following: bool


@dataclass(frozen=True)
class RealName:
    consumer_id: str
    verified: bool


@dataclass(frozen=True)
class TaoqiScore:
    consumer_id: str
    score: int


@dataclass(frozen=True)
class Blacklisting:
    """A blacklist entry added (``listed``) or removed; merchant scope names the store."""

    scope: Scope
    store_id: str
    consumer_id: str
    listed: bool


@dataclass(frozen=True)
class Invitation:
    inviter_id: str
    invitee_id: str


@dataclass(frozen=True)
class CrowdMembership:
    store_id: str
    crowd_id: str
    consumer_id: str
    member: bool


@dataclass(frozen=True)
class FanLevelFact:
    streamer_id: str
    consumer_id: str
    level: FanLevel


@dataclass(frozen=True)
class PushSubscription:
    """A consumer subscribed (or no longer) to a store's content-account pushes (SPEC P1)."""

    store_id: str
    consumer_id: str
    subscribed: bool


@dataclass(frozen=True)
class Broadcast:
    """A broadcast (content post) the store's content account published (SPEC P2 tier 1)."""

    store_id: str
    broadcast_id: str
    published_at: datetime


@dataclass(frozen=True)
class RevisitRate:
    """The fan revisit rate computed upstream, in basis points (SPEC P2 tier 2)."""

    store_id: str
    rate_bp: int
    computed_at: datetime


Fact = (
    Account
    | Store
    | PaidOrder
    | ContentLevel
    | Follow
    | RealName
    | TaoqiScore
    | Blacklisting
    | Invitation
    | CrowdMembership
    | FanLevelFact
    | PushSubscription
    | Broadcast
    | RevisitRate
)


# --- Thresholds of a group-set (SPEC C9, C10) --------------------------------


@dataclass(frozen=True)
class FollowThreshold:
    pass


@dataclass(frozen=True)
class SpendThreshold:
    min_spend_fen: int


@dataclass(frozen=True)
class PasswordThreshold:
    """The groups service keeps only the digest (``services.common.passwords``)."""

    digest: str


@dataclass(frozen=True)
class CrowdThreshold:
    crowd_id: str


@dataclass(frozen=True)
class FanLevelThreshold:
    min_level: FanLevel


Threshold = FollowThreshold | SpendThreshold | PasswordThreshold | CrowdThreshold | FanLevelThreshold

THRESHOLDS_BY_KIND: dict[GroupKind, tuple[type, ...]] = {
    GroupKind.STORE: (FollowThreshold, SpendThreshold, PasswordThreshold, CrowdThreshold),
    GroupKind.LIVE: (FanLevelThreshold,),
}


# --- What a check reads -------------------------------------------------------


@dataclass(frozen=True)
class CreateFacts:
    """What a creation check reads about one account (SPEC E1–E4).

    ``paid_orders`` is the count inside the E2 window and ``content_levels`` a
    history of 微淘 level updates; the repository may pass only the updates
    that decide the answer (the latest visible one and the next pending one).
    """

    account: Account
    store: Store | None = None
    paid_orders: int = 0
    content_levels: tuple[ContentLevel, ...] = ()


@dataclass(frozen=True)
class PlatformListing:
    """A live platform-blacklist entry, with why it exists (SPEC C4, C6, C7)."""

    source: ListingSource
    # C6: distinct merchants; C7: blacklisted invitees — counted when escalated.
    evidence: int = 0


@dataclass(frozen=True)
class JoinQuery:
    """A join check as the gateway asks it (SPEC C1–C10)."""

    consumer_id: str
    kind: GroupKind
    threshold: Threshold
    store_id: str = ""
    streamer_id: str = ""
    supplied_password: str = ""
    exempt_from_score: bool = False


@dataclass(frozen=True)
class JoinFacts:
    """What a join check reads about one consumer; unknown facts take the refusing default."""

    account: Account
    real_name_verified: bool = False
    taoqi_score: int = 0
    platform_listing: PlatformListing | None = None
    on_store_blacklist: bool = False
    follows_store: bool = False
    spend_fen: int = 0
    in_crowd: bool = False
    fan_level: FanLevel = FanLevel.NONE


# --- Push facts (SPEC P1–P3) ---------------------------------------------------


class PushAudience(StrEnum):
    """Who a push goes to (SPEC P1, P2, P5)."""

    SUBSCRIBERS = "subscribers"
    RECALL = "recall"  # old customers (P3) who are not fans, most recent buyers first
    FANS = "fans"


@dataclass(frozen=True)
class PushFacts:
    """The figures of a store's content account the push quotas read."""

    store_id: str
    main_account_id: str
    subscribers: int
    old_customer_fans: int
    recent_broadcasts: int
    revisit_rate_bp: int | None
