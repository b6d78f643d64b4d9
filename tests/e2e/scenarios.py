"""The scenarios, as plain functions over the public gateway API.

The tests assert each step; the observability checks run them once more as
traffic, so every dashboard panel has something to show.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import campaigns_pb2, campaigns_pb2_grpc, gateway_pb2, gateway_pb2_grpc, push_pb2, push_pb2_grpc
from services.common.timestamps import to_timestamp as ts
from tests.e2e.harness import Deployment

FOLLOW = common_pb2.Threshold(follow=common_pb2.FollowThreshold())
TIMEOUT = 15.0


def unique(prefix: str) -> str:
    return f"e2e-{prefix}-{uuid.uuid4().hex[:10]}"


class Gateway:
    """The public API with a principal per call: ``gw.groups.X(request, **gw.as_(...))``."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.channel = grpc.insecure_channel(deployment.gateway)
        self.groups = gateway_pb2_grpc.GroupServiceStub(self.channel)
        self.facts = gateway_pb2_grpc.FactServiceStub(self.channel)
        self.campaigns = campaigns_pb2_grpc.CampaignServiceStub(self.channel)
        self.push = push_pb2_grpc.PushServiceStub(self.channel)

    def as_(self, subject: str, role: str, store: str = "") -> dict[str, object]:
        token = self.deployment.token(subject, role, store)
        return {"metadata": (("authorization", f"Bearer {token}"),), "timeout": TIMEOUT}

    def report(self, facts: list[facts_pb2.Fact]) -> int:
        reply = self.facts.ReportFacts(
            gateway_pb2.ReportFactsRequest(facts=facts), **self.as_("e2e-upstream", "upstream")
        )
        return reply.applied

    def close(self) -> None:
        self.channel.close()


# --- facts ------------------------------------------------------------------------------------


def store_facts(
    store_id: str, main_id: str, *, orders: int = 30, level: int = 1, operating: bool = True, subs: tuple[str, ...] = ()
) -> list[facts_pb2.Fact]:
    """A store with ``orders`` paid orders yesterday and a 微淘 level computed three days ago (E2, E3)."""
    now = datetime.now(UTC)
    facts = [
        facts_pb2.Fact(
            store=facts_pb2.StoreFact(
                store_id=store_id,
                platform=facts_pb2.PLATFORM_TAOBAO,
                main_account_id=main_id,
                operating_normally=operating,
            )
        ),
        facts_pb2.Fact(
            account=facts_pb2.AccountFact(account_id=main_id, role=facts_pb2.ACCOUNT_ROLE_STORE_MAIN, store_id=store_id)
        ),
        facts_pb2.Fact(
            content_level=facts_pb2.ContentLevelFact(
                store_id=store_id, level=level, updated_at=ts(now - timedelta(days=3))
            )
        ),
    ]
    facts += [
        facts_pb2.Fact(
            account=facts_pb2.AccountFact(account_id=sub, role=facts_pb2.ACCOUNT_ROLE_STORE_SUB, store_id=store_id)
        )
        for sub in subs
    ]
    facts += [
        facts_pb2.Fact(
            paid_order=facts_pb2.PaidOrderFact(
                order_id=f"{store_id}-o{i}",
                store_id=store_id,
                consumer_id=f"{store_id}-b{i}",
                amount_fen=1000,
                paid_at=ts(now - timedelta(days=1)),
            )
        )
        for i in range(orders)
    ]
    return facts


def consumer_facts(
    consumer_id: str, *, score: int = 600, real_name: bool = True, follows: tuple[str, ...] = (), own_store: str = ""
) -> list[facts_pb2.Fact]:
    facts = [
        facts_pb2.Fact(
            account=facts_pb2.AccountFact(
                account_id=consumer_id, role=facts_pb2.ACCOUNT_ROLE_CONSUMER, own_store_id=own_store
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


def blacklist(scope: facts_pb2.BlacklistScope.ValueType, consumer_id: str, store_id: str = "") -> facts_pb2.Fact:
    return facts_pb2.Fact(
        blacklist=facts_pb2.BlacklistFact(scope=scope, store_id=store_id, consumer_id=consumer_id, listed=True)
    )


# --- refusals as a caller reads them ----------------------------------------------------------


@dataclass
class Refusal:
    code: grpc.StatusCode
    rules: list[str]  # PreconditionFailure violation types, one per failed rule
    reason: str  # ErrorInfo reason
    info_rules: str  # ErrorInfo metadata "rules"


def refusal(error: grpc.RpcError) -> Refusal:
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    rules: list[str] = []
    reason = info_rules = ""
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            rules += [violation.type for violation in failure.violations]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, info_rules = info.reason, info.metadata.get("rules", "")
    return Refusal(error.code(), rules, reason, info_rules)  # type: ignore[attr-defined]


def refused(call, request, **kwargs) -> Refusal:  # type: ignore[no-untyped-def]
    try:
        call(request, **kwargs)
    except grpc.RpcError as error:
        return refusal(error)
    raise AssertionError(f"{request.DESCRIPTOR.name} was expected to be refused")


# --- scenarios --------------------------------------------------------------------------------


@dataclass
class Store:
    store_id: str
    main_id: str
    subs: tuple[str, ...] = ()


def new_store(gw: Gateway, **kwargs: object) -> Store:
    store = Store(unique("s"), unique("m"), tuple(kwargs.pop("subs", ())))  # type: ignore[arg-type]
    gw.report(store_facts(store.store_id, store.main_id, subs=store.subs, **kwargs))  # type: ignore[arg-type]
    return store


def owner(gw: Gateway, store: Store) -> dict[str, object]:
    return gw.as_(store.main_id, "store_main", store.store_id)


def create_store_group(gw: Gateway, store: Store, **kwargs: object) -> gateway_pb2.GroupSet:
    request = gateway_pb2.CreateGroupSetRequest(
        kind=common_pb2.GROUP_KIND_STORE,
        name="粉丝群",
        threshold=FOLLOW,
        is_public=True,
        **kwargs,  # type: ignore[arg-type]
    )
    return gw.groups.CreateGroupSet(request, **owner(gw, store)).group_set


@dataclass
class StoreGroupRun:
    store: Store
    group: gateway_pb2.GroupSet
    consumer: str
    joined: gateway_pb2.JoinGroupSetResponse
    again: gateway_pb2.JoinGroupSetResponse
    mine: list[str]
    member_count: int
    listed: list[str]


def store_group_and_join(gw: Gateway) -> StoreGroupRun:
    """A store that qualifies creates a follow-threshold group-set; a follower joins, once."""
    store = new_store(gw)
    explained = gw.groups.ExplainCreate(
        gateway_pb2.ExplainCreateRequest(kind=common_pb2.GROUP_KIND_STORE), **owner(gw, store)
    )
    assert explained.verdict.allowed, explained
    group = create_store_group(gw, store, newcomer_reply="欢迎!")
    consumer = unique("c")
    gw.report(consumer_facts(consumer, follows=(store.store_id,)))
    as_consumer = gw.as_(consumer, "consumer")
    would = gw.groups.ExplainJoin(gateway_pb2.ExplainJoinRequest(group_set_id=group.group_set_id), **as_consumer)
    assert would.verdict.allowed, would
    joined = gw.groups.JoinGroupSet(gateway_pb2.JoinGroupSetRequest(group_set_id=group.group_set_id), **as_consumer)
    # Joining again is idempotent: the membership the consumer has, flagged (C13 keeps one per set).
    again = gw.groups.JoinGroupSet(gateway_pb2.JoinGroupSetRequest(group_set_id=group.group_set_id), **as_consumer)
    mine = gw.groups.ListMyGroups(gateway_pb2.ListMyGroupsRequest(), **as_consumer)
    fetched = gw.groups.GetGroupSet(gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), **as_consumer)
    listed = gw.groups.ListGroupSets(gateway_pb2.ListGroupSetsRequest(store_id=store.store_id), **owner(gw, store))
    gw.groups.LeaveGroupSet(gateway_pb2.LeaveGroupSetRequest(group_set_id=group.group_set_id), **as_consumer)
    return StoreGroupRun(
        store,
        group,
        consumer,
        joined,
        again,
        [m.group_set_id for m in mine.memberships],
        fetched.group_set.member_count,
        [g.group_set_id for g in listed.group_sets],
    )


@dataclass
class RefusedJoinRun:
    explained: list[str]
    join: Refusal
    member_count: int


# A consumer who fails every rule one consumer can fail at once for a follow-threshold group.
EVERY_JOIN_RULE = ["C1", "C2", "C4", "C5", "C8", "C9"]


def refused_join_with_every_rule(gw: Gateway) -> RefusedJoinRun:
    """Not real-name verified (C1), 淘气值 350 (C2), on the platform blacklist (C4) and the store's
    (C5), a seller of another store (C8), not following (C9): the refusal names all of them."""
    store = new_store(gw)
    group = create_store_group(gw, store)
    consumer = unique("c")
    gw.report(
        consumer_facts(consumer, score=350, real_name=False, own_store=unique("own"))
        + [
            blacklist(facts_pb2.BLACKLIST_SCOPE_PLATFORM, consumer),
            blacklist(facts_pb2.BLACKLIST_SCOPE_MERCHANT, consumer, store.store_id),
        ]
    )
    as_consumer = gw.as_(consumer, "consumer")
    explained = gw.groups.ExplainJoin(gateway_pb2.ExplainJoinRequest(group_set_id=group.group_set_id), **as_consumer)
    join = refused(
        gw.groups.JoinGroupSet, gateway_pb2.JoinGroupSetRequest(group_set_id=group.group_set_id), **as_consumer
    )
    fetched = gw.groups.GetGroupSet(gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), **owner(gw, store))
    return RefusedJoinRun(sorted(f.rule_id for f in explained.verdict.failures), join, fetched.group_set.member_count)


def refused_create(gw: Gateway) -> Refusal:
    """E2/E6: 12 orders, level L0, not operating — three failed conditions, all named."""
    store = new_store(gw, orders=12, level=0, operating=False)
    return refused(
        gw.groups.CreateGroupSet,
        gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name="粉丝群", threshold=FOLLOW),
        **owner(gw, store),
    )


@dataclass
class LiveRun:
    group: gateway_pb2.GroupSet
    iron: Refusal
    diamond: gateway_pb2.JoinGroupSetResponse


def live_fan_group(gw: Gateway) -> LiveRun:
    """A streamer's diamond-fans group (E4, C10, T4): an iron fan is refused, a diamond fan joins."""
    streamer = unique("st")
    gw.report(
        [
            facts_pb2.Fact(
                account=facts_pb2.AccountFact(
                    account_id=streamer, role=facts_pb2.ACCOUNT_ROLE_STREAMER, broadcast_permitted=True
                )
            )
        ]
    )
    group = gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(
            kind=common_pb2.GROUP_KIND_LIVE,
            name="主播铁粉群",
            threshold=common_pb2.Threshold(
                fan_level=common_pb2.FanLevelThreshold(min_level=common_pb2.FAN_LEVEL_DIAMOND)
            ),
        ),
        **gw.as_(streamer, "streamer"),
    ).group_set
    iron, diamond = unique("c"), unique("c")
    gw.report(
        consumer_facts(iron)
        + consumer_facts(diamond)
        + [
            facts_pb2.Fact(
                fan_level=facts_pb2.FanLevelFact(
                    streamer_id=streamer, consumer_id=iron, level=common_pb2.FAN_LEVEL_IRON
                )
            ),
            facts_pb2.Fact(
                fan_level=facts_pb2.FanLevelFact(
                    streamer_id=streamer, consumer_id=diamond, level=common_pb2.FAN_LEVEL_DIAMOND
                )
            ),
        ]
    )
    request = gateway_pb2.JoinGroupSetRequest(group_set_id=group.group_set_id)
    return LiveRun(
        group,
        refused(gw.groups.JoinGroupSet, request, **gw.as_(iron, "consumer")),
        gw.groups.JoinGroupSet(request, **gw.as_(diamond, "consumer")),
    )


@dataclass
class AdminRun:
    added: list[str]
    announcement: str
    admin_dissolve: Refusal
    removed: list[str]
    removed_admin_update: Refusal
    after_dissolve: Refusal


def admin_management(gw: Gateway) -> AdminRun:
    """R2: the owner appoints a sub-account; the admin edits settings but cannot dissolve; the
    owner removes the admin and dissolves the group-set. Ops set the store's group level (T8)."""
    sub = unique("sub")
    store = new_store(gw, subs=(sub,))
    group = create_store_group(gw, store)
    as_admin = gw.as_(sub, "store_sub", store.store_id)
    added = gw.groups.AddAdmin(
        gateway_pb2.AddAdminRequest(group_set_id=group.group_set_id, account_id=sub), **owner(gw, store)
    ).group_set
    updated = gw.groups.UpdateGroupSetSettings(
        gateway_pb2.UpdateGroupSetSettingsRequest(group_id=group.group_set_id, announcement="今晚8点秒杀"), **as_admin
    ).group_set
    admin_dissolve = refused(
        gw.groups.DissolveGroupSet, gateway_pb2.DissolveGroupSetRequest(group_set_id=group.group_set_id), **as_admin
    )
    removed = gw.groups.RemoveAdmin(
        gateway_pb2.RemoveAdminRequest(group_set_id=group.group_set_id, account_id=sub), **owner(gw, store)
    ).group_set
    removed_admin_update = refused(
        gw.groups.UpdateGroupSetSettings,
        gateway_pb2.UpdateGroupSetSettingsRequest(group_id=group.group_set_id, announcement="x"),
        **as_admin,
    )
    month = datetime.now(UTC).strftime("%Y-%m")
    gw.groups.SetGroupLevel(
        gateway_pb2.SetGroupLevelRequest(store_id=store.store_id, month=month, level=3), **gw.as_("e2e-ops", "ops")
    )
    gw.groups.DissolveGroupSet(gateway_pb2.DissolveGroupSetRequest(group_set_id=group.group_set_id), **owner(gw, store))
    after = refused(
        gw.groups.GetGroupSet, gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), **owner(gw, store)
    )
    return AdminRun(
        list(added.admin_ids),
        updated.announcement,
        admin_dissolve,
        list(removed.admin_ids),
        removed_admin_update,
        after,
    )


def unauthenticated(gw: Gateway) -> tuple[grpc.StatusCode, grpc.StatusCode]:
    """No token, and a consumer's token on the upstream-only fact API."""
    no_token = refused(gw.groups.ListMyGroups, gateway_pb2.ListMyGroupsRequest(), timeout=TIMEOUT).code
    wrong_role = refused(
        gw.facts.ReportFacts,
        gateway_pb2.ReportFactsRequest(facts=consumer_facts(unique("c"))),
        **gw.as_(unique("c"), "consumer"),
    ).code
    return no_token, wrong_role


@dataclass
class CampaignRun:
    sale: campaigns_pb2.Activity
    bought: campaigns_pb2.PurchaseResponse
    stock_left: int
    outsider: Refusal
    claimed: campaigns_pb2.Claim
    expiry: campaigns_pb2.RunExpiryResponse


def flash_sale_and_prizes(gw: Gateway) -> CampaignRun:
    """A store's group runs a flash sale (a member buys, an outsider is refused the flash price) and
    a red-packet fountain (a member claims); ops run the expiry job. The campaigns panels' traffic."""
    store = new_store(gw)
    group = create_store_group(gw, store)
    member, outsider = unique("c"), unique("c")
    gw.report(consumer_facts(member, follows=(store.store_id,)) + consumer_facts(outsider, follows=(store.store_id,)))
    gw.groups.JoinGroupSet(
        gateway_pb2.JoinGroupSetRequest(group_set_id=group.group_set_id), **gw.as_(member, "consumer")
    )
    item_id = unique("i")
    gw.campaigns.ReportItem(
        campaigns_pb2.ReportItemRequest(
            store_id=store.store_id,
            item_id=item_id,
            platform=facts_pb2.PLATFORM_TAOBAO,
            sku_count=1,
            price_min_fen=10_000,
            price_max_fen=10_000,
            initial_stock=10,
        ),
        **gw.as_("e2e-upstream", "upstream"),
    )
    # The deployment's clock is the real one: the activities started a moment ago and run for a day.
    now = datetime.now(UTC)
    window = {"starts_at": ts(now - timedelta(minutes=1)), "ends_at": ts(now + timedelta(days=1))}
    sale = gw.campaigns.CreateActivity(
        campaigns_pb2.CreateActivityRequest(
            group_set_id=group.group_set_id,
            title="秒杀",
            flash_sale=campaigns_pb2.FlashSaleSpec(item_id=item_id, flash_price_fen=6_000),
            **window,  # type: ignore[arg-type]
        ),
        **owner(gw, store),
    ).activity

    def purchase(consumer: str) -> campaigns_pb2.PurchaseRequest:
        return campaigns_pb2.PurchaseRequest(
            request_id=unique("buy"),
            store_id=store.store_id,
            order=campaigns_pb2.Order(item_id=item_id, quantity=1, flash_sale_id=sale.activity_id),
        )

    bought = gw.campaigns.Purchase(purchase(member), **gw.as_(member, "consumer"))
    refused_outsider = refused(gw.campaigns.Purchase, purchase(outsider), **gw.as_(outsider, "consumer"))
    stock = gw.campaigns.GetItem(
        campaigns_pb2.GetItemRequest(store_id=store.store_id, item_id=item_id), **gw.as_("e2e-upstream", "upstream")
    ).item.stock
    fountain = gw.campaigns.CreateActivity(
        campaigns_pb2.CreateActivityRequest(
            group_set_id=group.group_set_id,
            title="红包雨",
            red_packet_fountain=campaigns_pb2.FountainSpec(
                pools=[
                    campaigns_pb2.PoolSpec(
                        kind=campaigns_pb2.PRIZE_KIND_CASH_RED_PACKET,
                        value_fen=88,
                        count=5,
                        per_user_limit=1,
                        expires_at=ts(now + timedelta(days=1)),
                    )
                ]
            ),
            **window,  # type: ignore[arg-type]
        ),
        **owner(gw, store),
    ).activity
    claimed = gw.campaigns.ClaimPrize(
        campaigns_pb2.ClaimPrizeRequest(
            request_id=unique("claim"), store_id=store.store_id, activity_id=fountain.activity_id
        ),
        **gw.as_(member, "consumer"),
    ).claim
    expiry = gw.campaigns.RunExpiry(campaigns_pb2.RunExpiryRequest(), **gw.as_("e2e-ops", "ops"))
    return CampaignRun(sale, bought, stock, refused_outsider, claimed, expiry)


@dataclass
class PushRun:
    pending: push_pb2.Push
    approved: push_pb2.Push
    refused_subscription: Refusal
    queue: list[str]


def push_review_queue(gw: Gateway) -> PushRun:
    """A store's main account submits two granted mass-sends; ops approve one and leave the other in
    the review queue; a subscription push without subscribers is refused (P1). The push panels' traffic."""
    store = new_store(gw)
    fans = [unique("c") for _ in range(3)]
    gw.report([fact for fan in fans for fact in consumer_facts(fan, follows=(store.store_id,))])
    as_ops = gw.as_("e2e-ops", "ops")
    pushes = []
    for activity in ("双11", "双12"):
        grant = gw.push.GrantMassSend(
            push_pb2.GrantMassSendRequest(store_id=store.store_id, audience_size=len(fans), activity=activity), **as_ops
        ).grant
        pushes.append(
            gw.push.SubmitPush(
                push_pb2.SubmitPushRequest(kind=push_pb2.PUSH_KIND_MASS_SEND, body="新品上架", grant_id=grant.grant_id),
                **owner(gw, store),
            ).push
        )
    approved = gw.push.ReviewPush(
        push_pb2.ReviewPushRequest(push_id=pushes[0].push_id, decision=push_pb2.REVIEW_DECISION_APPROVE), **as_ops
    ).push
    subscription = refused(
        gw.push.SubmitPush,
        push_pb2.SubmitPushRequest(kind=push_pb2.PUSH_KIND_SUBSCRIPTION, body="订阅消息"),
        **owner(gw, store),
    )
    queue = gw.push.ListPendingReviews(push_pb2.ListPendingReviewsRequest(store_id=store.store_id), **as_ops)
    return PushRun(pushes[1], approved, subscription, [entry.push.push_id for entry in queue.reviews])


def all_scenarios(gw: Gateway) -> None:
    """Every scenario once: the traffic behind the observability checks."""
    store_group_and_join(gw)
    refused_join_with_every_rule(gw)
    refused_create(gw)
    live_fan_group(gw)
    admin_management(gw)
    unauthenticated(gw)
    flash_sale_and_prizes(gw)
    push_review_queue(gw)
