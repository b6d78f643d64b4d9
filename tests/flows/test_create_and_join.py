"""Create a group-set and join it through the gateway, every service a real process.

Each test names the SPEC rules it pins down; refusals are checked through the
rich status details a caller would read.
"""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from gateway.auth import Principal, Role
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import gateway_pb2
from services.common.errors import error_info, failures_from_status, field_violations, status_from_error
from tests.support import facts
from tests.support.request_ids import refused_as_reused
from tests.support.stack import GatewayClient, RunningStack, unique

FOLLOW = common_pb2.Threshold(follow=common_pb2.FollowThreshold())


def rules_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [f.rule_id for f in failures_from_status(status_from_error(error))]


async def new_store(gw: GatewayClient, platform: RunningStack, **kwargs: object) -> tuple[str, str]:
    store_id, main_id = unique("s"), unique("m")
    await gw.report(facts.store(store_id, main_id, platform.now, **kwargs))  # type: ignore[arg-type]
    return store_id, main_id


async def new_group(
    gw: GatewayClient, store_id: str, main_id: str, threshold: common_pb2.Threshold = FOLLOW, **kwargs: object
) -> gateway_pb2.GroupSet:
    reply = await gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(
            kind=common_pb2.GROUP_KIND_STORE,
            name="粉丝群",
            threshold=threshold,
            **kwargs,  # type: ignore[arg-type]
        ),
        metadata=gw.auth(gw.main_account(main_id, store_id)),
    )
    return reply.group_set


async def join(
    gw: GatewayClient, consumer_id: str, group_set_id: str, **kwargs: str
) -> gateway_pb2.JoinGroupSetResponse:
    return await gw.groups.JoinGroupSet(
        gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id, **kwargs),
        metadata=gw.auth(gw.consumer(consumer_id)),
    )


async def test_quick_start_create_then_join_T5_R3(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id, newcomer_reply="欢迎!")
    assert group.group_set_id.startswith("gs_")
    assert [s.name for s in group.sub_groups] == ["粉丝群1"]  # T5
    assert group.owner_account_id == main_id  # R1

    consumer = unique("c")
    await gw.report(facts.consumer(consumer, follows=(store_id,)))
    joined = await join(gw, consumer, group.group_set_id)
    assert joined.membership.sub_group_name == "粉丝群1"
    assert joined.newcomer_reply == "欢迎!"  # R3: shown on the first join

    mine = await gw.groups.ListMyGroups(gateway_pb2.ListMyGroupsRequest(), metadata=gw.auth(gw.consumer(consumer)))
    assert [m.group_set_id for m in mine.memberships] == [group.group_set_id]

    # Joining again is idempotent: OK with the membership she has, flagged; nothing changes (C13: one per set).
    again = await join(gw, consumer, group.group_set_id)
    assert again.already_member and not joined.already_member
    assert again.membership == joined.membership and again.newcomer_reply == ""
    explained = await gw.groups.ExplainJoin(
        gateway_pb2.ExplainJoinRequest(group_set_id=group.group_set_id), metadata=gw.auth(gw.consumer(consumer))
    )
    assert explained.verdict.allowed and explained.already_member
    fetched = await gw.groups.GetGroupSet(
        gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), metadata=gw.auth(gw.consumer(consumer))
    )
    assert fetched.group_set.member_count == 1

    await gw.groups.LeaveGroupSet(
        gateway_pb2.LeaveGroupSetRequest(group_set_id=group.group_set_id), metadata=gw.auth(gw.consumer(consumer))
    )
    rejoined = await join(gw, consumer, group.group_set_id)
    assert rejoined.newcomer_reply == ""  # R3: once, on the first join only


async def test_E6_refused_create_lists_every_failed_condition(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform, orders=12, level=0, operating=False)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await new_group(gw, store_id, main_id)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    failures = failures_from_status(status_from_error(refused.value))
    assert [f.rule_id for f in failures].count("E2") == 3
    assert any("12" in f.message and "30" in f.message for f in failures)
    # Every failure keeps its own figures, machine-readable: the orders' "required 30" is not the level's "1".
    by_reason = {f.reason: f.figures for f in failures}
    assert by_reason["NOT_ENOUGH_PAID_ORDERS"]["required"] == "30"
    assert by_reason["NOT_ENOUGH_PAID_ORDERS"]["paid_orders"] == "12"
    assert by_reason["CONTENT_LEVEL_TOO_LOW"]["required"] == "1"
    info = error_info(status_from_error(refused.value))
    assert info is not None and info.metadata["rules"] == "E2"  # each rule once
    required = sorted(v for k, v in info.metadata.items() if k.startswith("E2") and k.endswith(".required"))
    assert required == ["1", "30"]  # under keys that cannot collide (E2.required, E2#2.required …)

    explained = await gw.groups.ExplainCreate(
        gateway_pb2.ExplainCreateRequest(kind=common_pb2.GROUP_KIND_STORE),
        metadata=gw.auth(gw.main_account(main_id, store_id)),
    )
    assert not explained.verdict.allowed and len(explained.verdict.failures) == 3


async def test_E1_sub_account_cannot_create_store_groups(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, _ = await new_store(gw, platform, sub_accounts=("sub-" + unique(""),))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.groups.CreateGroupSet(
            gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name="x", threshold=FOLLOW),
            metadata=gw.auth(Principal(unique("sub"), Role.STORE_SUB, store_id)),
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_E1_token_for_another_store_is_refused(gw: GatewayClient, platform: RunningStack) -> None:
    _, main_id = await new_store(gw, platform)
    other_store, _ = await new_store(gw, platform)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await new_group(gw, other_store, main_id)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_E3_new_level_counts_two_days_after_the_update(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform, level=1, level_age=timedelta(hours=1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await new_group(gw, store_id, main_id)
    assert rules_of(refused.value) == ["E2"]
    start = platform.now
    try:
        platform.set_time(start + timedelta(days=2))
        group = await new_group(gw, store_id, main_id)
        assert group.group_set_id
    finally:
        platform.set_time(start)


async def test_C14_refused_join_names_every_failed_rule(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    consumer = unique("c")
    await gw.report(facts.consumer(consumer, score=350, real_name=False))
    explained = await gw.groups.ExplainJoin(
        gateway_pb2.ExplainJoinRequest(group_set_id=group.group_set_id), metadata=gw.auth(gw.consumer(consumer))
    )
    assert sorted(f.rule_id for f in explained.verdict.failures) == ["C1", "C2", "C9"]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await join(gw, consumer, group.group_set_id)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert sorted(rules_of(refused.value)) == ["C1", "C2", "C9"]
    score = next(f for f in failures_from_status(status_from_error(refused.value)) if f.rule_id == "C2")
    assert score.figures  # the compared figures travel with the refusal
    fetched = await gw.groups.GetGroupSet(
        gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), metadata=gw.auth(gw.consumer(consumer))
    )
    assert fetched.group_set.member_count == 0  # nothing changed


async def test_C13_a_member_joining_again_is_answered_with_the_membership_whatever_the_rules_say_now(
    gw: GatewayClient, platform: RunningStack
) -> None:
    """The gateway asks eligibility first over its copy of the set; a member who no longer qualifies
    (C1, C2 now) is still a member (C11, C3): the repeated join answers with the membership, not a refusal."""
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    consumer = unique("c")
    await gw.report(facts.consumer(consumer, follows=(store_id,)))
    joined = await join(gw, consumer, group.group_set_id)  # the gateway now holds a copy of the set
    await gw.report(facts.consumer(consumer, score=350, real_name=False, follows=(store_id,)))
    again = await join(gw, consumer, group.group_set_id)
    assert again.already_member and again.membership == joined.membership
    assert again.messages_hidden  # C3: below the bar now, so hidden


async def test_C9_password_threshold(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(
        gw, store_id, main_id, common_pb2.Threshold(password=common_pb2.PasswordThreshold(password="芝麻开门"))
    )
    assert group.threshold.password.password == ""  # never returned
    consumer = unique("c")
    await gw.report(facts.consumer(consumer))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await join(gw, consumer, group.group_set_id, password="wrong")
    assert rules_of(refused.value) == ["C9"]
    assert (await join(gw, consumer, group.group_set_id, password="芝麻开门")).membership.sub_group_id


async def test_C11_threshold_change_applies_to_later_joins_only(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    member, later = unique("c"), unique("c")
    await gw.report(facts.consumer(member, follows=(store_id,)) + facts.consumer(later, follows=(store_id,)))
    await join(gw, member, group.group_set_id)
    await gw.groups.UpdateGroupSetSettings(
        gateway_pb2.UpdateGroupSetSettingsRequest(
            group_id=group.group_set_id,
            threshold=common_pb2.Threshold(spend=common_pb2.SpendThreshold(min_spend_fen=10_000)),
        ),
        metadata=gw.auth(gw.main_account(main_id, store_id)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await join(gw, later, group.group_set_id)
    assert rules_of(refused.value) == ["C9"]
    fetched = await gw.groups.GetGroupSet(
        gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), metadata=gw.auth(gw.consumer(member))
    )
    assert fetched.group_set.member_count == 1  # the member inside stays


async def test_C10_live_fan_group_and_E4_sub_account_streamer(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    streamer = unique("st")
    await gw.report(facts.streamer(streamer, store_id=store_id))
    created = await gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(
            kind=common_pb2.GROUP_KIND_LIVE,
            name="主播铁粉群",
            threshold=common_pb2.Threshold(
                fan_level=common_pb2.FanLevelThreshold(min_level=common_pb2.FAN_LEVEL_DIAMOND)
            ),
        ),
        metadata=gw.auth(Principal(streamer, Role.STREAMER)),
    )
    group = created.group_set
    assert group.owner_account_id == main_id and streamer in group.admin_ids  # E4
    assert group.sub_groups[0].name == "主播铁粉群1" and group.sub_groups[0].capacity == 100  # T4, T5
    iron, diamond = unique("c"), unique("c")
    await gw.report(
        facts.consumer(iron)
        + facts.consumer(diamond)
        + [
            facts.fan_level(streamer, iron, common_pb2.FAN_LEVEL_IRON),
            facts.fan_level(streamer, diamond, common_pb2.FAN_LEVEL_DIAMOND),
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await join(gw, iron, group.group_set_id)
    assert rules_of(refused.value) == ["C10"]
    assert (await join(gw, diamond, group.group_set_id)).membership.sub_group_name == "主播铁粉群1"


async def test_R2_admins_manage_but_cannot_dissolve(gw: GatewayClient, platform: RunningStack) -> None:
    sub = unique("sub")
    store_id, main_id = await new_store(gw, platform, sub_accounts=(sub,))
    group = await new_group(gw, store_id, main_id)
    owner = gw.auth(gw.main_account(main_id, store_id))
    admin = gw.auth(Principal(sub, Role.STORE_SUB, store_id))
    added = await gw.groups.AddAdmin(
        gateway_pb2.AddAdminRequest(group_set_id=group.group_set_id, account_id=sub), metadata=owner
    )
    assert sub in added.group_set.admin_ids
    updated = await gw.groups.UpdateGroupSetSettings(
        gateway_pb2.UpdateGroupSetSettingsRequest(group_id=group.group_set_id, announcement="今晚8点秒杀"),
        metadata=admin,
    )
    assert updated.group_set.announcement == "今晚8点秒杀"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.groups.DissolveGroupSet(
            gateway_pb2.DissolveGroupSetRequest(group_set_id=group.group_set_id), metadata=admin
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    await gw.groups.DissolveGroupSet(
        gateway_pb2.DissolveGroupSetRequest(group_set_id=group.group_set_id), metadata=owner
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await gw.groups.GetGroupSet(gateway_pb2.GetGroupSetRequest(group_set_id=group.group_set_id), metadata=owner)
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND


async def test_R2_only_store_sub_accounts_become_admins(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    outsider = unique("c")
    await gw.report(facts.consumer(outsider))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.groups.AddAdmin(
            gateway_pb2.AddAdminRequest(group_set_id=group.group_set_id, account_id=outsider),
            metadata=gw.auth(gw.main_account(main_id, store_id)),
        )
    assert rules_of(refused.value) == ["R2"]


async def test_R3_settings_on_a_sub_group_are_refused(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.groups.UpdateGroupSetSettings(
            gateway_pb2.UpdateGroupSetSettingsRequest(group_id=group.sub_groups[0].sub_group_id, announcement="x"),
            metadata=gw.auth(gw.main_account(main_id, store_id)),
        )
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rules_of(refused.value) == ["R3"]


async def test_C12_merchants_cannot_add_consumers(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.groups.JoinGroupSet(
            gateway_pb2.JoinGroupSetRequest(group_set_id=group.group_set_id),
            metadata=gw.auth(gw.main_account(main_id, store_id)),
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_request_id_makes_create_and_join_idempotent(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    first = await new_group(gw, store_id, main_id, request_id="create-1")
    second = await new_group(gw, store_id, main_id, request_id="create-1")
    assert first.group_set_id == second.group_set_id
    consumer = unique("c")
    await gw.report(facts.consumer(consumer, follows=(store_id,)))
    a = await join(gw, consumer, first.group_set_id, request_id="join-1")
    b = await join(gw, consumer, first.group_set_id, request_id="join-1")
    assert a == b
    fetched = await gw.groups.GetGroupSet(
        gateway_pb2.GetGroupSetRequest(group_set_id=first.group_set_id), metadata=gw.auth(gw.consumer(consumer))
    )
    assert fetched.group_set.member_count == 1


async def test_a_reused_request_id_with_another_request_is_already_exists(
    gw: GatewayClient, platform: RunningStack
) -> None:
    """The request_id rule end to end: the backend's one status reaches the caller, and nothing is created."""
    store_id, main_id = await new_store(gw, platform)
    first = await new_group(gw, store_id, main_id, request_id="create-2")
    another = gw.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(
            kind=common_pb2.GROUP_KIND_STORE, name="另一个群", threshold=FOLLOW, request_id="create-2"
        ),
        metadata=gw.auth(gw.main_account(main_id, store_id)),
    )
    await refused_as_reused(another, "create-2")
    listed = await gw.groups.ListGroupSets(
        gateway_pb2.ListGroupSetsRequest(store_id=store_id), metadata=gw.auth(gw.main_account(main_id, store_id))
    )
    assert [g.group_set_id for g in listed.group_sets] == [first.group_set_id]


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer not-a-token"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Basic dXNlcjpwYXNz"),), grpc.StatusCode.UNAUTHENTICATED),
    ],
)
async def test_calls_without_a_valid_token_are_unauthenticated(
    gw: GatewayClient, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.groups.GetGroupSet(gateway_pb2.GetGroupSetRequest(group_set_id="gs_x"), metadata=metadata)
    assert refused.value.code() is code


async def test_only_upstream_systems_report_facts(gw: GatewayClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.facts.ReportFacts(
            gateway_pb2.ReportFactsRequest(facts=facts.consumer(unique("c"))), metadata=gw.auth(gw.consumer("c1"))
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_bad_input_is_invalid_argument_with_the_field(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    owner = gw.auth(gw.main_account(main_id, store_id))
    cases = [
        (gateway_pb2.CreateGroupSetRequest(kind=99, name="x", threshold=FOLLOW), "kind"),
        (gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name="", threshold=FOLLOW), "name"),
        (
            gateway_pb2.CreateGroupSetRequest(
                kind=common_pb2.GROUP_KIND_STORE,
                name="x",
                threshold=common_pb2.Threshold(fan_level=common_pb2.FanLevelThreshold(min_level=2)),
            ),
            "threshold",
        ),
        (
            gateway_pb2.CreateGroupSetRequest(
                kind=common_pb2.GROUP_KIND_STORE,
                name="x",
                threshold=common_pb2.Threshold(password=common_pb2.PasswordThreshold(password="")),
            ),
            "threshold",
        ),
        (gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name="x" * 500, threshold=FOLLOW), "name"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.groups.CreateGroupSet(request, metadata=owner)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, request
        fields = [v.field for v in field_violations(status_from_error(refused.value))]
        assert any(f.startswith(field) for f in fields), (field, fields)

    bad_order = facts.order("o-neg", store_id, "c1", -5, platform.now)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.report([bad_order])
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert any("amount_fen" in v.field for v in field_violations(status_from_error(refused.value)))

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await join(gw, unique("c"), "")
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_group_and_unknown_consumer_are_not_found(gw: GatewayClient, platform: RunningStack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await join(gw, unique("c"), "gs_doesnotexist")
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    with pytest.raises(grpc.aio.AioRpcError) as stranger:
        await join(gw, unique("never-reported"), group.group_set_id)
    assert stranger.value.code() is grpc.StatusCode.NOT_FOUND


async def test_C8_seller_accounts_cannot_join_another_stores_groups(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    seller = unique("c")
    await gw.report(facts.consumer(seller, follows=(store_id,), own_store_id=unique("own")))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await join(gw, seller, group.group_set_id)
    assert rules_of(refused.value) == ["C8"]


async def test_C5_merchant_blacklist(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    banned = unique("c")
    await gw.report(
        facts.consumer(banned, follows=(store_id,))
        + [
            facts_pb2.Fact(
                blacklist=facts_pb2.BlacklistFact(
                    scope=facts_pb2.BLACKLIST_SCOPE_MERCHANT, store_id=store_id, consumer_id=banned, listed=True
                )
            )
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await join(gw, banned, group.group_set_id)
    assert rules_of(refused.value) == ["C5"]


def client_calls(platform: RunningStack, method: str) -> float:
    import urllib.request

    with urllib.request.urlopen(platform.stack.gateway.metrics_url, timeout=5) as page:
        text = page.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("grpc_client_handled_total{") and f'grpc_method="{method}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_join_into_a_known_set_needs_two_backend_calls(gw: GatewayClient, platform: RunningStack) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    first, second = unique("c"), unique("c")
    await gw.report(facts.consumer(first, follows=(store_id,)) + facts.consumer(second, follows=(store_id,)))
    await join(gw, first, group.group_set_id)
    checks = client_calls(platform, "CheckJoin")
    await join(gw, second, group.group_set_id)
    # eligibility's CheckJoin and groups' AddMember; the set's threshold was kept from the first join
    assert client_calls(platform, "CheckJoin") == checks + 1


async def test_X1_ops_explain_create_and_join_for_another_account_and_nobody_else_may(
    gw: GatewayClient, platform: RunningStack
) -> None:
    store_id, main_id = await new_store(gw, platform)
    group = await new_group(gw, store_id, main_id)
    stranger = unique("c")
    await gw.report(facts.consumer(stranger, score=350))
    ops = gw.auth(Principal("ops-support", Role.OPS))
    joining = await gw.groups.ExplainJoin(
        gateway_pb2.ExplainJoinRequest(group_set_id=group.group_set_id, consumer_id=stranger), metadata=ops
    )
    assert {f.rule_id for f in joining.verdict.failures} == {"C2", "C9"}
    creating = await gw.groups.ExplainCreate(
        gateway_pb2.ExplainCreateRequest(kind=common_pb2.GROUP_KIND_STORE, account_id=stranger), metadata=ops
    )
    assert [f.rule_id for f in creating.verdict.failures] == ["E1"]
    owner = await gw.groups.ExplainCreate(
        gateway_pb2.ExplainCreateRequest(kind=common_pb2.GROUP_KIND_STORE, account_id=main_id), metadata=ops
    )
    assert not owner.verdict.failures  # the store's main account may create
    # Only ops ask on another account's behalf: a consumer, or a store naming its own owner, is refused.
    for principal, request in (
        (gw.consumer(stranger), gateway_pb2.ExplainJoinRequest(group_set_id=group.group_set_id, consumer_id="c-other")),
        (
            gw.main_account(main_id, store_id),
            gateway_pb2.ExplainCreateRequest(kind=common_pb2.GROUP_KIND_STORE, account_id=main_id),
        ),
    ):
        call = gw.groups.ExplainJoin if isinstance(request, gateway_pb2.ExplainJoinRequest) else gw.groups.ExplainCreate
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request, metadata=gw.auth(principal))  # type: ignore[operator]
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
