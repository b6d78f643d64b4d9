"""The eligibility tests' requests, over the one set of fact builders (``cli.facts``)."""

from __future__ import annotations

from cli.facts import (
    account,
    content_level,
    crowd,
    fan_level,
    follow,
    invitation,
    merchant_blacklist,
    order,
    platform_blacklist,
    ts,
)
from cli.facts import consumer_account as consumer
from cli.facts import real_name_fact as real_name
from cli.facts import score_fact as score
from cli.facts import store_fact as store
from qun.common.v1 import facts_pb2 as f
from qun.common.v1 import groups_pb2 as g
from qun.eligibility.v1 import eligibility_pb2 as e

__all__ = [
    "account",
    "consumer",
    "content_level",
    "crowd",
    "fan_level",
    "follow",
    "invitation",
    "merchant_blacklist",
    "order",
    "platform_blacklist",
    "real_name",
    "score",
    "store",
    "ts",
]


def ingest(*facts: f.Fact) -> e.IngestFactsRequest:
    return e.IngestFactsRequest(facts=list(facts))


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
