"""Groups over time through the gateway, with the stack's clock moved (SPEC T2, T3, T7, T8, V1–V6,
C3, C15, R4, X2, X4, X5). Small caps and level bars come from a rules file, as ops would set them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.auth import Principal, Role
from qun.common.v1 import facts_pb2, groups_pb2 as common_pb2
from qun.gateway.v1 import gateway_pb2, operations_pb2, operations_pb2_grpc
from services.common.errors import failures_from_status, status_from_error
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


def ts(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


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
    for day in range(1, 32):
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


async def test_T2_T3_expansion_needs_two_L3_months_and_85_percent(gw: GatewayClient, platform: RunningStack, at) -> None:  # type: ignore[no-untyped-def]
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
        operations_pb2.GetItemPageModuleRequest(store_id=store_id, item_id="i1"), metadata=gw.auth(gw.consumer(consumer))
    )
    assert any(e.shown for e in shown.entries)
    group_buy = await discovery_stub(gw).GetItemPageModule(
        operations_pb2.GetItemPageModuleRequest(store_id=store_id, item_id="i1", in_group_buy=True),
        metadata=gw.auth(gw.consumer(consumer)),
    )
    assert not any(e.shown for e in group_buy.entries) and [r.rule_id for r in group_buy.module_reasons] == ["V3"]


async def test_V4_V5_recommendation_prefers_spend_and_stops_once_joined(gw: GatewayClient, platform: RunningStack) -> None:
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
        gateway_pb2.UpdateGroupSetSettingsRequest(group_id=hidden.group_set.group_set_id, is_public=True), metadata=owner
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
        return operations_pb2.CheckMessageRequest(group_set_id=group.group_set_id, sender_id=sender, kind=kind, **kwargs)

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
        message(main_id, operations_pb2.MESSAGE_KIND_ITEM_SHARE, item_interaction=operations_pb2.ITEM_INTERACTION_BROWSED),
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
    fetched = await gw.groups.GetGroupSet(gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), metadata=owner)
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
