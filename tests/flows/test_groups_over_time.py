"""Groups over time through the gateway, with the stack's clock moved (SPEC T2, T3, T7, T8, V1–V6,
C3, C15, R4, X2, X4, X5). Small caps and level bars come from a rules file, as ops would set them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import update

from gateway.auth import Principal, Role
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import gateway_pb2, operations_pb2, operations_pb2_grpc
from services.common.db import Database
from services.common.errors import failures_from_status, status_from_error
from services.common.page_tokens import encode_page_token
from services.common.settings import database_url
from services.common.timestamps import to_timestamp as ts
from services.groups.models import CapacityOwner, MonthlyMetrics, SleepingPlan
from tests.support import facts
from tests.support.stack import GatewayClient, RunningStack, running_stack, unique

RULES = """
[store_groups]
sub_group_capacity = 2
group_set_capacity = 4
sub_groups_per_set = 2
group_sets_by_level = [1, 1, 1, 1, 2]
members_by_level = [4, 4, 4, 4, 8]

[group_levels]
min_avg_members = [0, 1, 2, 3, 4]
min_open_rate_bp = [0, 100, 200, 300, 400]
min_revisit_7d_bp = [0, 0, 0, 0, 0]
min_conversion_bp = [0, 0, 0, 0, 0]
min_merchant_messages = [0, 1, 1, 1, 1]

[expansion]
grant_members = 8
max_members = 16

[sleeping]
notice_days = 7
"""
FOLLOW = common_pb2.Threshold(follow=common_pb2.FollowThreshold())
OPS = Principal("ops-1", Role.OPS)
UPSTREAM = Principal("upstream-1", Role.UPSTREAM)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    tmp = tmp_path_factory.mktemp(f"over-time-{request.param}")
    rules = Path(tmp / "rules.toml")
    rules.write_text(RULES)
    extra = {"QUN_RULES_FILE": str(rules), "QUN_JOB_INTERVAL_SECONDS": "0"}
    with running_stack(tmp, request.param, extra_env=extra) as running:
        yield running


@pytest.fixture
def at(platform: RunningStack) -> Iterator[object]:
    """Restores the stack's clock after a test that moved it."""
    start = platform.now
    yield platform.set_time
    platform.set_time(start)


def ops_stub(gw: GatewayClient) -> operations_pb2_grpc.GroupOperationsServiceStub:
    return operations_pb2_grpc.GroupOperationsServiceStub(gw.channel)


def discovery_stub(gw: GatewayClient) -> operations_pb2_grpc.DiscoveryServiceStub:
    return operations_pb2_grpc.DiscoveryServiceStub(gw.channel)


async def store_with_group(
    gw: GatewayClient, platform: RunningStack, threshold: common_pb2.Threshold = FOLLOW, *, public: bool = True
) -> tuple[str, str, gateway_pb2.GroupSet]:
    store_id, main_id = unique("s"), unique("m")
    await gw.report(facts.store(store_id, main_id, platform.now))
    created = await gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(
            kind=common_pb2.GROUP_KIND_STORE, name="群", threshold=threshold, is_public=public
        ),
        metadata=gw.auth(gw.main_account(main_id, store_id)),
    )
    return store_id, main_id, created.group_set


async def add_members(gw: GatewayClient, store_id: str, group_set_id: str, count: int) -> list[str]:
    ids = [unique("c") for _ in range(count)]
    await gw.report([f for c in ids for f in facts.consumer(c, follows=(store_id,))])
    for consumer in ids:
        await gw.groups.JoinGroupSet(
            gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id), metadata=gw.auth(gw.consumer(consumer))
        )
    return ids


def rules_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [f.rule_id for f in failures_from_status(status_from_error(error))]


async def test_T7_T8_month_end_level_job_runs_once(gw: GatewayClient, platform: RunningStack, at) -> None:  # type: ignore[no-untyped-def]
    store_id, main_id, group = await store_with_group(gw, platform)
    await add_members(gw, store_id, group.group_set_id, 3)
    ops = ops_stub(gw)
    month = "2026-03"
    for day in range(1, 32):  # each day counted once it has ended in the marketplace (08:05 the next day there)
        at(datetime(2026, 3, day, 0, 5, tzinfo=UTC) + timedelta(days=1))
        await ops.RunJob(
            operations_pb2.RunJobRequest(job=operations_pb2.JOB_DAILY_COUNTS, period=f"{month}-{day:02d}"),
            metadata=gw.auth(OPS),
        )
    await ops.ReportMonthlyMetrics(
        operations_pb2.ReportMonthlyMetricsRequest(
            store_id=store_id, month=month, open_rate_bp=350, merchant_messages=5
        ),
        metadata=gw.auth(UPSTREAM),
    )
    at(datetime(2026, 4, 1, 0, 5, tzinfo=UTC))
    first = await ops.RunJob(
        operations_pb2.RunJobRequest(job=operations_pb2.JOB_LEVELS, period=month), metadata=gw.auth(OPS)
    )
    assert first.ran and f"{store_id}: L3" in first.summary  # avg 3 members, open rate 3.5%: L3 (T7, T8)
    again = await ops.RunJob(
        operations_pb2.RunJobRequest(job=operations_pb2.JOB_LEVELS, period=month), metadata=gw.auth(OPS)
    )
    assert not again.ran  # a month runs once
    capacity = await ops.GetCapacity(
        operations_pb2.GetCapacityRequest(store_id=store_id), metadata=gw.auth(gw.main_account(main_id, store_id))
    )
    assert capacity.level == 3 and capacity.history[0].month == "2026-04"


async def test_T2_T3_expansion_needs_two_L3_months_and_85_percent(
    gw: GatewayClient, platform: RunningStack, at
) -> None:  # type: ignore[no-untyped-def]
    store_id, main_id, group = await store_with_group(gw, platform)
    owner = gw.auth(gw.main_account(main_id, store_id))
    ops = ops_stub(gw)
    for month, level in (("2026-03", 4), ("2026-04", 4), ("2026-05", 4)):
        await gw.groups.SetGroupLevel(
            gateway_pb2.SetGroupLevelRequest(store_id=store_id, month=month, level=level), metadata=gw.auth(OPS)
        )
    second = await gw.groups.CreateGroupSet(  # T2: L4 allows a second set
        gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name="二群", threshold=FOLLOW),
        metadata=owner,
    )
    await add_members(gw, store_id, group.group_set_id, 4)
    await add_members(gw, store_id, second.group_set.group_set_id, 2)
    at(datetime(2026, 5, 10, tzinfo=UTC))  # March and April at L4, now May
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # 6 ÷ (2 × 4) = 75% < 85%
        await ops.ApplyForExpansion(operations_pb2.ApplyForExpansionRequest(store_id=store_id), metadata=owner)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    failures = failures_from_status(status_from_error(refused.value))
    assert [f.reason for f in failures] == ["UTILISATION_TOO_LOW"]
    assert failures[0].figures["utilisation_bp"] == "7500" and failures[0].figures["required_bp"] == "8500"
    await add_members(gw, store_id, second.group_set.group_set_id, 1)  # 7 ÷ 8 = 87.5%
    granted = await ops.ApplyForExpansion(operations_pb2.ApplyForExpansionRequest(store_id=store_id), metadata=owner)
    assert (granted.granted_members, granted.member_capacity) == (8, 16)
    with pytest.raises(grpc.aio.AioRpcError) as capped:  # 16 + 8 > 16
        await ops.ApplyForExpansion(operations_pb2.ApplyForExpansionRequest(store_id=store_id), metadata=owner)
    assert "EXPANSION_LIMIT_REACHED" in [f.reason for f in failures_from_status(status_from_error(capped.value))]
    audit = await ops.ListAuditEntries(operations_pb2.ListAuditEntriesRequest(store_id=store_id), metadata=owner)
    assert ("capacity.grant", "8", "16") in [(e.action, e.old_value, e.new_value) for e in audit.entries]


async def test_T3_refused_below_L3_in_the_last_two_months(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id, _ = await store_with_group(gw, platform)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ops_stub(gw).ApplyForExpansion(
            operations_pb2.ApplyForExpansionRequest(store_id=store_id),
            metadata=gw.auth(gw.main_account(main_id, store_id)),
        )
    reasons = [f.reason for f in failures_from_status(status_from_error(refused.value))]
    assert "LEVEL_TOO_LOW_FOR_EXPANSION" in reasons and "UTILISATION_TOO_LOW" in reasons


async def test_V1_V2_store_page_next_day_rule_and_private_sets(gw: GatewayClient, platform: RunningStack, at) -> None:  # type: ignore[no-untyped-def]
    store_id, main_id, public = await store_with_group(gw, platform)
    await gw.groups.SetGroupLevel(  # L4: two sets allowed under the test rules
        gateway_pb2.SetGroupLevelRequest(store_id=store_id, month="2026-03", level=4), metadata=gw.auth(OPS)
    )
    await gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name="暗群", threshold=FOLLOW),
        metadata=gw.auth(gw.main_account(main_id, store_id)),
    )  # not public: never in a module (V1)
    consumer = unique("c")
    await gw.report(facts.consumer(consumer, follows=(store_id,)))
    page = await discovery_stub(gw).GetStorePageModule(
        operations_pb2.GetStorePageModuleRequest(store_id=store_id), metadata=gw.auth(gw.consumer(consumer))
    )
    assert [r.rule_id for r in page.module_reasons] == ["V2"] and not any(e.shown for e in page.entries)
    at(platform.now + timedelta(days=1))
    page = await discovery_stub(gw).GetStorePageModule(
        operations_pb2.GetStorePageModuleRequest(store_id=store_id), metadata=gw.auth(gw.consumer(consumer))
    )
    assert [e.group_set_id for e in page.entries if e.shown] == [public.group_set_id]


async def test_V2_threshold_not_met_hides_with_reason(gw: GatewayClient, platform: RunningStack, at) -> None:  # type: ignore[no-untyped-def]
    store_id, _, group = await store_with_group(gw, platform)
    stranger = unique("c")
    await gw.report(facts.consumer(stranger))
    at(platform.now + timedelta(days=1))
    page = await discovery_stub(gw).GetStorePageModule(
        operations_pb2.GetStorePageModuleRequest(store_id=store_id), metadata=gw.auth(gw.consumer(stranger))
    )
    [entry] = page.entries
    assert entry.group_set_id == group.group_set_id and not entry.shown
    assert [r.rule_id for r in entry.reasons] == ["C9"]


async def test_V3_item_page_never_on_group_buy(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, _, _ = await store_with_group(gw, platform)
    consumer = unique("c")
    await gw.report(facts.consumer(consumer, follows=(store_id,)))
    shown = await discovery_stub(gw).GetItemPageModule(
        operations_pb2.GetItemPageModuleRequest(store_id=store_id, item_id="i1"),
        metadata=gw.auth(gw.consumer(consumer)),
    )
    assert any(e.shown for e in shown.entries)
    group_buy = await discovery_stub(gw).GetItemPageModule(
        operations_pb2.GetItemPageModuleRequest(store_id=store_id, item_id="i1", in_group_buy=True),
        metadata=gw.auth(gw.consumer(consumer)),
    )
    assert not any(e.shown for e in group_buy.entries) and [r.rule_id for r in group_buy.module_reasons] == ["V3"]


async def test_V4_V5_recommendation_prefers_spend_and_stops_once_joined(
    gw: GatewayClient, platform: RunningStack
) -> None:
    store_id, main_id, follow_group = await store_with_group(gw, platform)
    owner = gw.auth(gw.main_account(main_id, store_id))
    await gw.groups.SetGroupLevel(  # L4: two sets allowed under the test rules
        gateway_pb2.SetGroupLevelRequest(store_id=store_id, month="2026-03", level=4), metadata=gw.auth(OPS)
    )
    spend = await gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(
            kind=common_pb2.GROUP_KIND_STORE,
            name="老客群",
            is_public=True,
            threshold=common_pb2.Threshold(spend=common_pb2.SpendThreshold(min_spend_fen=5000)),
        ),
        metadata=owner,
    )
    buyer = unique("c")
    await gw.report(
        facts.consumer(buyer, follows=(store_id,)) + [facts.order(unique("o"), store_id, buyer, 8000, platform.now)]
    )
    recommended = await discovery_stub(gw).RecommendAfterPurchase(
        operations_pb2.RecommendAfterPurchaseRequest(store_id=store_id), metadata=gw.auth(gw.consumer(buyer))
    )
    assert recommended.group_set_id == spend.group_set.group_set_id  # V4
    await gw.groups.JoinGroupSet(
        gateway_pb2.JoinGroupSetRequest(group_set_id=follow_group.group_set_id), metadata=gw.auth(gw.consumer(buyer))
    )
    after = await discovery_stub(gw).RecommendAfterPurchase(
        operations_pb2.RecommendAfterPurchaseRequest(store_id=store_id), metadata=gw.auth(gw.consumer(buyer))
    )
    assert after.group_set_id == "" and [r.rule_id for r in after.module_reasons] == ["V5"]


async def test_V5a_password_groups_are_never_recommended(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, _, _ = await store_with_group(
        gw, platform, common_pb2.Threshold(password=common_pb2.PasswordThreshold(password="x1"))
    )
    consumer = unique("c")
    await gw.report(facts.consumer(consumer))
    recommended = await discovery_stub(gw).RecommendAfterPurchase(
        operations_pb2.RecommendAfterPurchaseRequest(store_id=store_id), metadata=gw.auth(gw.consumer(consumer))
    )
    assert recommended.group_set_id == ""
    assert "PASSWORD_GROUP" in [r.reason for r in recommended.considered[0].reasons]


async def test_V6_post_component(gw: GatewayClient, platform: RunningStack) -> None:
    sub = unique("sub")
    store_id, main_id = unique("s"), unique("m")
    await gw.report(facts.store(store_id, main_id, platform.now, sub_accounts=(sub,)))
    owner = gw.auth(gw.main_account(main_id, store_id))
    hidden = await gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name="x", threshold=FOLLOW), metadata=owner
    )
    check = discovery_stub(gw).CheckPostComponent
    request = operations_pb2.CheckPostComponentRequest(group_set_id=hidden.group_set.group_set_id)
    assert [f.reason for f in (await check(request, metadata=owner)).verdict.failures] == ["GROUP_NOT_PUBLIC"]
    await gw.groups.UpdateGroupSetSettings(
        gateway_pb2.UpdateGroupSetSettingsRequest(group_id=hidden.group_set.group_set_id, is_public=True),
        metadata=owner,
    )
    assert (await check(request, metadata=owner)).verdict.allowed
    by_sub = await check(request, metadata=gw.auth(Principal(sub, Role.STORE_SUB, store_id)))
    assert [f.reason for f in by_sub.verdict.failures] == ["NOT_MAIN_ACCOUNT"]


async def test_C3_R4_message_policy(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id, group = await store_with_group(gw, platform)
    [fan] = await add_members(gw, store_id, group.group_set_id, 1)
    check = discovery_stub(gw).CheckMessage
    upstream = gw.auth(UPSTREAM)

    def message(sender: str, kind: int, **kwargs: int) -> operations_pb2.CheckMessageRequest:
        return operations_pb2.CheckMessageRequest(
            group_set_id=group.group_set_id, sender_id=sender, kind=kind, **kwargs
        )

    text = await check(message(fan, operations_pb2.MESSAGE_KIND_TEXT), metadata=upstream)
    assert text.verdict.allowed and not text.hidden_from_others
    await gw.report([facts_pb2.Fact(taoqi_score=facts_pb2.TaoqiScoreFact(consumer_id=fan, score=300))])
    low = await check(message(fan, operations_pb2.MESSAGE_KIND_TEXT), metadata=upstream)
    assert low.verdict.allowed and low.hidden_from_others  # C3: stays, hidden from others
    share = await check(
        message(fan, operations_pb2.MESSAGE_KIND_ITEM_SHARE, item_interaction=operations_pb2.ITEM_INTERACTION_BOUGHT),
        metadata=upstream,
    )
    assert [f.reason for f in share.verdict.failures] == ["FANS_CANNOT_SHARE_ITEMS"]  # R4
    owner_share = await check(
        message(
            main_id, operations_pb2.MESSAGE_KIND_ITEM_SHARE, item_interaction=operations_pb2.ITEM_INTERACTION_BROWSED
        ),
        metadata=upstream,
    )
    assert owner_share.verdict.allowed
    long_video = await check(message(main_id, operations_pb2.MESSAGE_KIND_VIDEO, video_seconds=16), metadata=upstream)
    assert [f.reason for f in long_video.verdict.failures] == ["VIDEO_TOO_LONG"]


async def test_C15_X5_sleeping_members_get_notice_then_leave(gw: GatewayClient, platform: RunningStack, at) -> None:  # type: ignore[no-untyped-def]
    store_id, main_id, group = await store_with_group(gw, platform)
    owner = gw.auth(gw.main_account(main_id, store_id))
    sleeper, active = await add_members(gw, store_id, group.group_set_id, 2)
    ops = ops_stub(gw)
    plan = await ops.SetSleepingPlan(
        operations_pb2.SetSleepingPlanRequest(store_id=store_id, enabled=True, inactivity_days=30), metadata=owner
    )
    assert plan.inactivity_days == 30
    sweep = operations_pb2.RunJobRequest(job=operations_pb2.JOB_SLEEPING)
    start = platform.now
    at(start + timedelta(days=31))
    assert (await ops.RunJob(sweep, metadata=gw.auth(OPS))).summary.startswith("2 noticed")
    noticed = await gw.groups.ListMyGroups(gateway_pb2.ListMyGroupsRequest(), metadata=gw.auth(gw.consumer(sleeper)))
    [membership] = noticed.memberships  # X5: the member sees the notice and when removal comes
    assert membership.removal_after.ToDatetime(tzinfo=UTC) == start + timedelta(days=31 + 7)
    await ops.ReportMemberActivity(  # X5: activity after the notice lets the member stay
        operations_pb2.ReportMemberActivityRequest(
            group_set_id=group.group_set_id, consumer_id=active, active_at=ts(start + timedelta(days=32))
        ),
        metadata=gw.auth(UPSTREAM),
    )
    at(start + timedelta(days=38))
    swept = await ops.RunJob(sweep, metadata=gw.auth(OPS))
    assert swept.summary == "0 noticed, 1 removed"
    mine = await gw.groups.ListMyGroups(gateway_pb2.ListMyGroupsRequest(), metadata=gw.auth(gw.consumer(sleeper)))
    assert list(mine.memberships) == []
    fetched = await gw.groups.GetGroupSet(
        gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), metadata=owner
    )
    assert fetched.group_set.member_count == 1  # the room is free for new customers
    audit = await ops.ListAuditEntries(operations_pb2.ListAuditEntriesRequest(store_id=store_id), metadata=owner)
    assert ("sleeping.remove", sleeper) in [(e.action, e.old_value) for e in audit.entries]


async def test_X2_what_if_counts_failing_members_and_new_qualifiers(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id, group = await store_with_group(gw, platform)
    big_spender, small_spender = await add_members(gw, store_id, group.group_set_id, 2)
    outsider = unique("c")
    await gw.report(
        facts.consumer(outsider)
        + [
            facts.order(unique("o"), store_id, big_spender, 9000, platform.now),
            facts.order(unique("o"), store_id, small_spender, 100, platform.now),
            facts.order(unique("o"), store_id, outsider, 9000, platform.now),
        ]
    )
    answer = await ops_stub(gw).WhatIfThreshold(
        operations_pb2.WhatIfThresholdRequest(
            group_set_id=group.group_set_id,
            threshold=common_pb2.Threshold(spend=common_pb2.SpendThreshold(min_spend_fen=5000)),
        ),
        metadata=gw.auth(gw.main_account(main_id, store_id)),
    )
    assert (answer.members, answer.members_failing, answer.newly_qualifying) == (2, 1, 1)
    fetched = await gw.groups.GetGroupSet(
        gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), metadata=gw.auth(gw.consumer(outsider))
    )
    assert fetched.group_set.threshold.HasField("follow")  # read-only


async def test_X4_audit_trail_records_who_changed_what(gw: GatewayClient, platform: RunningStack) -> None:
    sub = unique("sub")
    store_id, main_id = unique("s"), unique("m")
    await gw.report(facts.store(store_id, main_id, platform.now, sub_accounts=(sub,)))
    owner = gw.auth(gw.main_account(main_id, store_id))
    created = await gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name="x", threshold=FOLLOW), metadata=owner
    )
    gid = created.group_set.group_set_id
    await gw.groups.AddAdmin(gateway_pb2.AddAdminRequest(group_set_id=gid, account_id=sub), metadata=owner)
    await gw.groups.UpdateGroupSetSettings(
        gateway_pb2.UpdateGroupSetSettingsRequest(
            group_id=gid, threshold=common_pb2.Threshold(spend=common_pb2.SpendThreshold(min_spend_fen=100))
        ),
        metadata=gw.auth(Principal(sub, Role.STORE_SUB, store_id)),
    )
    await gw.groups.DissolveGroupSet(gateway_pb2.DissolveGroupSetRequest(group_set_id=gid), metadata=owner)
    audit = await ops_stub(gw).ListAuditEntries(
        operations_pb2.ListAuditEntriesRequest(store_id=store_id, page_size=2), metadata=owner
    )
    rest = await ops_stub(gw).ListAuditEntries(
        operations_pb2.ListAuditEntriesRequest(store_id=store_id, page_token=audit.next_page_token), metadata=owner
    )
    entries = [(e.actor, e.action, e.old_value, e.new_value) for e in [*audit.entries, *rest.entries]]
    assert entries[1:] == [
        (main_id, "admin.add", "", sub),
        (sub, "threshold", "follow", "spend>=100fen"),
        (main_id, "group_set.dissolve", "0 members", "dissolved"),
    ]
    assert entries[0][:2] == (main_id, "group_set.create")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await ops_stub(gw).ListAuditEntries(
            operations_pb2.ListAuditEntriesRequest(store_id=store_id), metadata=gw.auth(gw.consumer("c1"))
        )
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # A forged token naming a row number no key holds is the caller's error, not the database's.
    forged = encode_page_token(str(2**63))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ops_stub(gw).ListAuditEntries(
            operations_pb2.ListAuditEntriesRequest(store_id=store_id, page_token=forged), metadata=owner
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "page_token" in str(refused.value.details())


async def test_C14_a_refusal_names_the_groups_rules_too_when_the_gateway_knows_the_set(
    gw: GatewayClient, platform: RunningStack
) -> None:
    """The gateway asks eligibility first over its copy of the set; a refusal still asks groups (T1 here)."""
    store_id, _, group = await store_with_group(gw, platform)
    await add_members(gw, store_id, group.group_set_id, 4)  # full under the test rules; the gateway kept the set
    late = unique("c")
    await gw.report(facts.consumer(late, score=350, real_name=False, follows=(store_id,)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.groups.JoinGroupSet(
            gateway_pb2.JoinGroupSetRequest(group_set_id=group.group_set_id), metadata=gw.auth(gw.consumer(late))
        )
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert sorted(rules_of(refused.value)) == ["C1", "C2", "T1", "T1", "T2"]  # the set, its sub-groups, the store: full


async def test_C3_C2_owner_and_admins_below_the_bar_are_hidden_nowhere(
    gw: GatewayClient, platform: RunningStack
) -> None:
    """One rule, one answer: the owner and super admins are exempt from C2, so neither their join nor the
    messaging system's CheckMessage hides their messages (C3); a plain member below the bar is hidden on both."""
    admin = unique("a")
    store_id, main_id = unique("s"), unique("m")
    await gw.report(facts.store(store_id, main_id, platform.now, sub_accounts=(admin,)))
    owner = gw.auth(gw.main_account(main_id, store_id))
    created = await gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name="群", threshold=FOLLOW), metadata=owner
    )
    group_set_id = created.group_set.group_set_id
    await gw.groups.AddAdmin(gateway_pb2.AddAdminRequest(group_set_id=group_set_id, account_id=admin), metadata=owner)
    fan = unique("c")
    await gw.report(facts.consumer(fan, score=300, follows=(store_id,)))
    low = [
        f
        for account in (main_id, admin)
        for f in (
            facts_pb2.Fact(real_name=facts_pb2.RealNameFact(consumer_id=account, verified=True)),
            facts_pb2.Fact(taoqi_score=facts_pb2.TaoqiScoreFact(consumer_id=account, score=300)),
            facts_pb2.Fact(follow=facts_pb2.FollowFact(store_id=store_id, consumer_id=account, following=True)),
        )
    ]
    await gw.report(low)  # 300 < the 401 bar; the owner's and the admin's account roles stay as they are
    answers = {}
    for account in (main_id, admin):
        joined = await gw.groups.JoinGroupSet(
            gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id), metadata=gw.auth(gw.consumer(account))
        )
        checked = await discovery_stub(gw).CheckMessage(
            operations_pb2.CheckMessageRequest(
                group_set_id=group_set_id, sender_id=account, kind=operations_pb2.MESSAGE_KIND_TEXT
            ),
            metadata=gw.auth(UPSTREAM),
        )
        answers[account] = (joined.messages_hidden, checked.hidden_from_others)
    assert answers == {main_id: (False, False), admin: (False, False)}
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # a plain consumer below the bar cannot join (C2) …
        await gw.groups.JoinGroupSet(
            gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id), metadata=gw.auth(gw.consumer(fan))
        )
    assert rules_of(refused.value) == ["C2"]
    await gw.report([facts_pb2.Fact(taoqi_score=facts_pb2.TaoqiScoreFact(consumer_id=fan, score=500))])
    await gw.groups.JoinGroupSet(
        gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id), metadata=gw.auth(gw.consumer(fan))
    )
    await gw.report([facts_pb2.Fact(taoqi_score=facts_pb2.TaoqiScoreFact(consumer_id=fan, score=300))])
    again = await gw.groups.JoinGroupSet(  # … and once inside and fallen below it, is hidden on both paths
        gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id), metadata=gw.auth(gw.consumer(fan))
    )
    checked = await discovery_stub(gw).CheckMessage(
        operations_pb2.CheckMessageRequest(
            group_set_id=group_set_id, sender_id=fan, kind=operations_pb2.MESSAGE_KIND_TEXT
        ),
        metadata=gw.auth(UPSTREAM),
    )
    assert (again.already_member, again.messages_hidden, checked.hidden_from_others) == (True, True, True)


async def test_T3_the_last_application_is_granted_up_to_the_cap(gw: GatewayClient, platform: RunningStack, at) -> None:  # type: ignore[no-untyped-def]
    """At L3 the test rules allow 4 members; each grant adds 8, up to 16: 4 → 12, then 12 → 16 (+4, not
    refused for want of a whole 8), then refused (SPEC's 475,000 → 500,000 with +25,000)."""
    store_id, main_id, group = await store_with_group(gw, platform)
    owner = gw.auth(gw.main_account(main_id, store_id))
    ops = ops_stub(gw)
    for month in ("2026-01", "2026-02"):
        await gw.groups.SetGroupLevel(
            gateway_pb2.SetGroupLevelRequest(store_id=store_id, month=month, level=3), metadata=gw.auth(OPS)
        )
    await add_members(gw, store_id, group.group_set_id, 4)  # 4 ÷ (1 × 4) = 100% (T3)
    apply = operations_pb2.ApplyForExpansionRequest(store_id=store_id)
    first = await ops.ApplyForExpansion(apply, metadata=owner)
    assert (first.granted_members, first.member_capacity) == (8, 12)
    last = await ops.ApplyForExpansion(apply, metadata=owner)
    assert (last.granted_members, last.member_capacity) == (4, 16)
    with pytest.raises(grpc.aio.AioRpcError) as capped:
        await ops.ApplyForExpansion(apply, metadata=owner)
    [failure] = failures_from_status(status_from_error(capped.value))
    assert (failure.reason, failure.figures["capacity"], failure.figures["max"]) == (
        "EXPANSION_LIMIT_REACHED",
        "16",
        "16",
    )
    audit = await ops.ListAuditEntries(operations_pb2.ListAuditEntriesRequest(store_id=store_id), metadata=owner)
    grants = [(e.old_value, e.new_value) for e in audit.entries if e.action == "capacity.grant"]
    assert grants == [("4", "12"), ("12", "16")]


async def test_T8_late_figures_recompute_the_month_and_ops_may_recompute_it(
    gw: GatewayClient, platform: RunningStack
) -> None:
    """Two identical stores; one reports December's figures before the level job, one after. The late one
    is not left at L0: its figures recompute its level at once, audited old → new (X4); ops may recompute
    a month on purpose."""
    month = "2025-12"
    (on_time, on_time_main, on_time_group), (late, late_main, late_group) = [
        await store_with_group(gw, platform) for _ in range(2)
    ]
    for store_id, group in ((on_time, on_time_group), (late, late_group)):
        await add_members(gw, store_id, group.group_set_id, 4)
    ops = ops_stub(gw)
    for day in range(1, 9):  # 4 members on 8 of 31 days: an average of 1.03 (T7), L1's bar
        await ops.RunJob(
            operations_pb2.RunJobRequest(job=operations_pb2.JOB_DAILY_COUNTS, period=f"{month}-{day:02d}"),
            metadata=gw.auth(OPS),
        )

    def figures(store_id: str) -> operations_pb2.ReportMonthlyMetricsRequest:
        return operations_pb2.ReportMonthlyMetricsRequest(
            store_id=store_id, month=month, open_rate_bp=150, merchant_messages=2
        )

    early = await ops.ReportMonthlyMetrics(figures(on_time), metadata=gw.auth(UPSTREAM))
    assert not early.level_recomputed  # the month is not settled yet: the job will read them
    run = operations_pb2.RunJobRequest(job=operations_pb2.JOB_LEVELS, period=month)
    first = await ops.RunJob(run, metadata=gw.auth(OPS))
    assert first.ran and f"{on_time}: L1" in first.summary and f"{late}: L0" in first.summary

    reported = await ops.ReportMonthlyMetrics(figures(late), metadata=gw.auth(UPSTREAM))
    assert (reported.level_recomputed, reported.previous_level, reported.level) == (True, 0, 1)
    levels = {}
    for store_id, main_id in ((on_time, on_time_main), (late, late_main)):
        capacity = await ops.GetCapacity(
            operations_pb2.GetCapacityRequest(store_id=store_id), metadata=gw.auth(gw.main_account(main_id, store_id))
        )
        levels[store_id] = {h.month: h.level for h in capacity.history}["2026-01"]
    assert levels == {on_time: 1, late: 1}  # the identical stores stand at the same level
    assert not (await ops.RunJob(run, metadata=gw.auth(OPS))).ran  # each store's month settles once

    late_owner = gw.auth(gw.main_account(late_main, late))
    audit = await ops.ListAuditEntries(operations_pb2.ListAuditEntriesRequest(store_id=late), metadata=late_owner)
    changes = [
        (e.actor, e.action, e.target, e.old_value, e.new_value) for e in audit.entries if e.action.startswith("level")
    ]
    assert changes == [
        (OPS.subject, "level", "2026-01", "", "L0"),  # the run ops triggered
        (UPSTREAM.subject, "level.recompute", "2026-01", "L0", "L1"),  # the late figures
    ]

    recomputed = await ops.RunJob(  # ops recompute the month on purpose: every store, audited again
        operations_pb2.RunJobRequest(job=operations_pb2.JOB_LEVELS, period=month, recompute=True), metadata=gw.auth(OPS)
    )
    assert recomputed.ran and f"{late}: L1" in recomputed.summary and f"{on_time}: L1" in recomputed.summary
    audit = await ops.ListAuditEntries(operations_pb2.ListAuditEntriesRequest(store_id=late), metadata=late_owner)
    assert (OPS.subject, "level.recompute", "L1", "L1") in [
        (e.actor, e.action, e.old_value, e.new_value) for e in audit.entries
    ]
    for misread in (
        operations_pb2.RunJobRequest(job=operations_pb2.JOB_SLEEPING, recompute=True),
        operations_pb2.RunJobRequest(job=operations_pb2.JOB_SLEEPING, period=month),  # it would have been ignored
    ):
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await ops.RunJob(misread, metadata=gw.auth(OPS))
        assert wrong.value.code() is grpc.StatusCode.INVALID_ARGUMENT


@asynccontextmanager
async def groups_database(platform: RunningStack) -> AsyncIterator[Database]:
    """The running groups service's database, for writing rows no API would accept."""
    db = Database(database_url(platform.stack.env_for("groups"), "groups"), pool_size=1)
    try:
        yield db
    finally:
        await db.close()


async def test_D3_the_trigger_settles_every_store_but_a_poisoned_one_and_lists_it(
    gw: GatewayClient, platform: RunningStack
) -> None:
    """One store's rows are corrupt (written straight into the database, past every validation): each job,
    run by ops, settles the other stores, answers OK and names the store it could not settle and why."""
    month, day = "2025-10", "2025-10-15"
    ops = ops_stub(gw)
    stores = {}
    for label in ("good", "poisoned"):
        store_id, main_id, group = await store_with_group(gw, platform)
        await add_members(gw, store_id, group.group_set_id, 1)
        await ops.ReportMonthlyMetrics(
            operations_pb2.ReportMonthlyMetricsRequest(
                store_id=store_id, month=month, open_rate_bp=150, merchant_messages=2
            ),
            metadata=gw.auth(UPSTREAM),
        )
        await ops.SetSleepingPlan(
            operations_pb2.SetSleepingPlanRequest(store_id=store_id, enabled=True, inactivity_days=3000),
            metadata=gw.auth(gw.main_account(main_id, store_id)),
        )
        stores[label] = (store_id, main_id)
    good, poisoned = stores["good"][0], stores["poisoned"][0]
    async with groups_database(platform) as db:
        async with db.transaction() as session:
            await session.execute(
                update(CapacityOwner).where(CapacityOwner.owner_key == poisoned).values(member_count=-3)
            )
            await session.execute(
                update(MonthlyMetrics).where(MonthlyMetrics.store_id == poisoned).values(open_rate_bp=-7)
            )
            await session.execute(
                update(SleepingPlan).where(SleepingPlan.store_id == poisoned).values(inactivity_days=2_000_000_000)
            )
        try:
            jobs = {
                "daily_counts": operations_pb2.RunJobRequest(job=operations_pb2.JOB_DAILY_COUNTS, period=day),
                "levels": operations_pb2.RunJobRequest(job=operations_pb2.JOB_LEVELS, period=month),
                "sleeping": operations_pb2.RunJobRequest(job=operations_pb2.JOB_SLEEPING),
            }
            answers = {name: await ops.RunJob(request, metadata=gw.auth(OPS)) for name, request in jobs.items()}
            for name, answer in answers.items():  # OK, with the one store it could not settle
                assert [(f.job, f.store_id) for f in answer.failures] == [(name, poisoned)], name
                assert f"failed: {poisoned}" in answer.summary
            assert "negative member count (-3)" in answers["daily_counts"].failures[0].error
            assert answers["daily_counts"].ran and answers["daily_counts"].affected >= 1  # the good one, on time
            assert f"{good}: L0" in answers["levels"].summary  # settled on its figures (1 member on 1 day), on time
            assert "open_rate_bp -7" in answers["levels"].failures[0].error
            assert answers["sleeping"].failures[0].error.startswith("OverflowError")
        finally:
            async with db.transaction() as session:
                await session.execute(
                    update(CapacityOwner).where(CapacityOwner.owner_key == poisoned).values(member_count=1)
                )
                await session.execute(
                    update(MonthlyMetrics).where(MonthlyMetrics.store_id == poisoned).values(open_rate_bp=150)
                )
                await session.execute(
                    update(SleepingPlan).where(SleepingPlan.store_id == poisoned).values(inactivity_days=3000)
                )
    repaired = {name: await ops.RunJob(request, metadata=gw.auth(OPS)) for name, request in jobs.items()}
    assert all(list(answer.failures) == [] for answer in repaired.values())
    assert repaired["daily_counts"].affected == 1 and f"{poisoned}: L0" in repaired["levels"].summary
    for store_id, main_id in stores.values():  # leave no plan on for the module's other tests
        await ops.SetSleepingPlan(
            operations_pb2.SetSleepingPlanRequest(store_id=store_id, enabled=False),
            metadata=gw.auth(gw.main_account(main_id, store_id)),
        )
