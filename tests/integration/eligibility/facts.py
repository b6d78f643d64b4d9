"""Builders of the facts the eligibility tests ingest, as protos."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from qun.common.v1 import facts_pb2 as f
from qun.common.v1 import groups_pb2 as g
from qun.eligibility.v1 import eligibility_pb2 as e


def ts(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def ingest(*facts: f.Fact) -> e.IngestFactsRequest:
    return e.IngestFactsRequest(facts=list(facts))


def account(account_id: str, role: int, store_id: str = "", **extra: object) -> f.Fact:
    return f.Fact(account=f.AccountFact(account_id=account_id, role=role, store_id=store_id, **extra))  # type: ignore[arg-type]


def consumer(consumer_id: str, own_store_id: str = "") -> f.Fact:
    return account(consumer_id, f.ACCOUNT_ROLE_CONSUMER, own_store_id=own_store_id)


def store(store_id: str, main_account_id: str, operating_normally: bool = True) -> f.Fact:
    return f.Fact(
        store=f.StoreFact(
            store_id=store_id,
            platform=f.PLATFORM_TAOBAO,
            main_account_id=main_account_id,
            operating_normally=operating_normally,
        )
    )


def order(order_id: str, store_id: str, consumer_id: str, amount_fen: int, paid_at: datetime) -> f.Fact:
    return f.Fact(
        paid_order=f.PaidOrderFact(
            order_id=order_id, store_id=store_id, consumer_id=consumer_id, amount_fen=amount_fen, paid_at=ts(paid_at)
        )
    )


def content_level(store_id: str, level: int, updated_at: datetime) -> f.Fact:
    return f.Fact(content_level=f.ContentLevelFact(store_id=store_id, level=level, updated_at=ts(updated_at)))


def real_name(consumer_id: str, verified: bool = True) -> f.Fact:
    return f.Fact(real_name=f.RealNameFact(consumer_id=consumer_id, verified=verified))


def score(consumer_id: str, value: int) -> f.Fact:
    return f.Fact(taoqi_score=f.TaoqiScoreFact(consumer_id=consumer_id, score=value))


def follow(store_id: str, consumer_id: str, following: bool = True) -> f.Fact:
    return f.Fact(follow=f.FollowFact(store_id=store_id, consumer_id=consumer_id, following=following))


def merchant_blacklist(store_id: str, consumer_id: str, listed: bool = True) -> f.Fact:
    return f.Fact(
        blacklist=f.BlacklistFact(
            scope=f.BLACKLIST_SCOPE_MERCHANT, store_id=store_id, consumer_id=consumer_id, listed=listed
        )
    )


def platform_blacklist(consumer_id: str, listed: bool = True) -> f.Fact:
    return f.Fact(blacklist=f.BlacklistFact(scope=f.BLACKLIST_SCOPE_PLATFORM, consumer_id=consumer_id, listed=listed))


def invitation(inviter_id: str, invitee_id: str) -> f.Fact:
    return f.Fact(invitation=f.InvitationFact(inviter_id=inviter_id, invitee_id=invitee_id))


def crowd(store_id: str, crowd_id: str, consumer_id: str, member: bool = True) -> f.Fact:
    return f.Fact(
        crowd_membership=f.CrowdMembershipFact(
            store_id=store_id, crowd_id=crowd_id, consumer_id=consumer_id, member=member
        )
    )


def fan_level(streamer_id: str, consumer_id: str, level: int) -> f.Fact:
    return f.Fact(fan_level=f.FanLevelFact(streamer_id=streamer_id, consumer_id=consumer_id, level=level))  # type: ignore[arg-type]


def store_join(consumer_id: str, store_id: str, threshold: g.Threshold, **extra: object) -> e.CheckJoinRequest:
    return e.CheckJoinRequest(
        consumer_id=consumer_id,
        kind=g.GROUP_KIND_STORE,
        store_id=store_id,
        threshold=threshold,
        **extra,  # type: ignore[arg-type]
    )


def live_join(consumer_id: str, streamer_id: str, min_level: int, **extra: object) -> e.CheckJoinRequest:
    return e.CheckJoinRequest(
        consumer_id=consumer_id,
        kind=g.GROUP_KIND_LIVE,
        streamer_id=streamer_id,
        threshold=g.Threshold(fan_level=g.FanLevelThreshold(min_level=min_level)),  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )
