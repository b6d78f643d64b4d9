"""Builders for the facts upstream systems report: stores that may create groups, consumers that may join.

Used by qunctl, the tests and the benchmarks, so every one of them reports facts the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from qun.common.v1 import facts_pb2, groups_pb2


def ts(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


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
        facts_pb2.Fact(
            store=facts_pb2.StoreFact(
                store_id=store_id,
                platform=platform,
                main_account_id=main_id,
                operating_normally=operating,
            )
        ),
        facts_pb2.Fact(
            account=facts_pb2.AccountFact(account_id=main_id, role=facts_pb2.ACCOUNT_ROLE_STORE_MAIN, store_id=store_id)
        ),
    ]
    facts += [
        facts_pb2.Fact(
            account=facts_pb2.AccountFact(account_id=sub, role=facts_pb2.ACCOUNT_ROLE_STORE_SUB, store_id=store_id)
        )
        for sub in sub_accounts
    ]
    facts += [
        order(f"{store_id}-o{i}", store_id, f"{store_id}-buyer{i}", 1000, now - timedelta(days=1))
        for i in range(orders)
    ]
    if level is not None:
        facts.append(
            facts_pb2.Fact(
                content_level=facts_pb2.ContentLevelFact(store_id=store_id, level=level, updated_at=ts(now - level_age))
            )
        )
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
        facts_pb2.Fact(
            account=facts_pb2.AccountFact(
                account_id=consumer_id, role=facts_pb2.ACCOUNT_ROLE_CONSUMER, own_store_id=own_store_id
            )
        ),
        facts_pb2.Fact(real_name=facts_pb2.RealNameFact(consumer_id=consumer_id, verified=real_name)),
        facts_pb2.Fact(taoqi_score=facts_pb2.TaoqiScoreFact(consumer_id=consumer_id, score=score)),
    ]
    facts += [
        facts_pb2.Fact(follow=facts_pb2.FollowFact(store_id=s, consumer_id=consumer_id, following=True))
        for s in follows
    ]
    return facts


def streamer(streamer_id: str, *, store_id: str = "", broadcast: bool = True) -> list[facts_pb2.Fact]:
    return [
        facts_pb2.Fact(
            account=facts_pb2.AccountFact(
                account_id=streamer_id,
                role=facts_pb2.ACCOUNT_ROLE_STREAMER,
                store_id=store_id,
                broadcast_permitted=broadcast,
            )
        )
    ]


def fan_level(streamer_id: str, consumer_id: str, level: int) -> facts_pb2.Fact:
    return facts_pb2.Fact(
        fan_level=facts_pb2.FanLevelFact(
            streamer_id=streamer_id, consumer_id=consumer_id, level=groups_pb2.FanLevel.ValueType(level)
        )
    )
