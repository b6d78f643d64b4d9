"""Builders for the facts upstream systems report: one fact each, and stores and consumers made of them.

The one set of fact builders: qunctl, every test suite and the benchmarks
report facts through these, so every one of them reports facts the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from qun.common.v1 import facts_pb2, groups_pb2
from services.common.timestamps import to_timestamp as ts

# -- one fact each --------------------------------------------------------------------------------


def account(
    account_id: str, role: facts_pb2.AccountRole.ValueType, store_id: str = "", **extra: str | bool
) -> facts_pb2.Fact:
    return facts_pb2.Fact(
        account=facts_pb2.AccountFact(account_id=account_id, role=role, store_id=store_id, **extra)  # type: ignore[arg-type]  # the fields named in extra
    )


def consumer_account(consumer_id: str, own_store_id: str = "") -> facts_pb2.Fact:
    return account(consumer_id, facts_pb2.ACCOUNT_ROLE_CONSUMER, own_store_id=own_store_id)


def store_fact(
    store_id: str,
    main_account_id: str,
    operating_normally: bool = True,
    platform: facts_pb2.Platform.ValueType = facts_pb2.PLATFORM_TAOBAO,
) -> facts_pb2.Fact:
    return facts_pb2.Fact(
        store=facts_pb2.StoreFact(
            store_id=store_id,
            platform=platform,
            main_account_id=main_account_id,
            operating_normally=operating_normally,
        )
    )


def content_level(store_id: str, level: int, updated_at: datetime) -> facts_pb2.Fact:
    return facts_pb2.Fact(
        content_level=facts_pb2.ContentLevelFact(store_id=store_id, level=level, updated_at=ts(updated_at))
    )


def real_name_fact(consumer_id: str, verified: bool = True) -> facts_pb2.Fact:
    return facts_pb2.Fact(real_name=facts_pb2.RealNameFact(consumer_id=consumer_id, verified=verified))


def score_fact(consumer_id: str, value: int) -> facts_pb2.Fact:
    return facts_pb2.Fact(taoqi_score=facts_pb2.TaoqiScoreFact(consumer_id=consumer_id, score=value))


def follow(store_id: str, consumer_id: str, following: bool = True) -> facts_pb2.Fact:
    return facts_pb2.Fact(follow=facts_pb2.FollowFact(store_id=store_id, consumer_id=consumer_id, following=following))


def merchant_blacklist(store_id: str, consumer_id: str, listed: bool = True) -> facts_pb2.Fact:
    return facts_pb2.Fact(
        blacklist=facts_pb2.BlacklistFact(
            scope=facts_pb2.BLACKLIST_SCOPE_MERCHANT, store_id=store_id, consumer_id=consumer_id, listed=listed
        )
    )


def platform_blacklist(consumer_id: str, listed: bool = True) -> facts_pb2.Fact:
    return facts_pb2.Fact(
        blacklist=facts_pb2.BlacklistFact(
            scope=facts_pb2.BLACKLIST_SCOPE_PLATFORM, consumer_id=consumer_id, listed=listed
        )
    )


def invitation(inviter_id: str, invitee_id: str) -> facts_pb2.Fact:
    return facts_pb2.Fact(invitation=facts_pb2.InvitationFact(inviter_id=inviter_id, invitee_id=invitee_id))


def crowd(store_id: str, crowd_id: str, consumer_id: str, member: bool = True) -> facts_pb2.Fact:
    return facts_pb2.Fact(
        crowd_membership=facts_pb2.CrowdMembershipFact(
            store_id=store_id, crowd_id=crowd_id, consumer_id=consumer_id, member=member
        )
    )


# -- stores, consumers and streamers, as the tests and qunctl report them -------------------------


def store(
    store_id: str,
    main_id: str,
    now: datetime,
    *,
    orders: int = 30,
    level: int | None = 1,
    level_age: timedelta = timedelta(days=3),
    operating: bool = True,
    sub_accounts: tuple[str, ...] = (),
    platform: facts_pb2.Platform.ValueType = facts_pb2.PLATFORM_TAOBAO,
) -> list[facts_pb2.Fact]:
    """A store with ``orders`` paid orders yesterday and a 微淘 level computed ``level_age`` ago."""
    facts = [
        store_fact(store_id, main_id, operating, platform),
        account(main_id, facts_pb2.ACCOUNT_ROLE_STORE_MAIN, store_id),
    ]
    facts += [account(sub, facts_pb2.ACCOUNT_ROLE_STORE_SUB, store_id) for sub in sub_accounts]
    facts += [
        order(f"{store_id}-o{i}", store_id, f"{store_id}-buyer{i}", 1000, now - timedelta(days=1))
        for i in range(orders)
    ]
    if level is not None:
        facts.append(content_level(store_id, level, now - level_age))
    return facts


def order(order_id: str, store_id: str, consumer_id: str, amount_fen: int, paid_at: datetime) -> facts_pb2.Fact:
    return facts_pb2.Fact(
        paid_order=facts_pb2.PaidOrderFact(
            order_id=order_id, store_id=store_id, consumer_id=consumer_id, amount_fen=amount_fen, paid_at=ts(paid_at)
        )
    )


def consumer(
    consumer_id: str,
    *,
    score: int = 600,
    real_name: bool = True,
    follows: tuple[str, ...] = (),
    own_store_id: str = "",
) -> list[facts_pb2.Fact]:
    facts = [
        consumer_account(consumer_id, own_store_id),
        real_name_fact(consumer_id, real_name),
        score_fact(consumer_id, score),
    ]
    facts += [follow(s, consumer_id) for s in follows]
    return facts


def streamer(streamer_id: str, *, store_id: str = "", broadcast: bool = True) -> list[facts_pb2.Fact]:
    return [account(streamer_id, facts_pb2.ACCOUNT_ROLE_STREAMER, store_id, broadcast_permitted=broadcast)]


def fan_level(streamer_id: str, consumer_id: str, level: int) -> facts_pb2.Fact:
    return facts_pb2.Fact(
        fan_level=facts_pb2.FanLevelFact(
            streamer_id=streamer_id, consumer_id=consumer_id, level=groups_pb2.FanLevel.ValueType(level)
        )
    )
