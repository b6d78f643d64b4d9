"""GroupsService over a real loopback socket, on SQLite and PostgreSQL.

Each test names the SPEC rule it guards and fails when that rule breaks.
Small caps (``dataclasses.replace`` of the rules) keep the boundaries a few
joins away.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from qun.common.v1 import groups_pb2 as common_groups_pb2
from qun.groups.v1 import groups_pb2, groups_pb2_grpc
from services.common import passwords
from services.common.clock import ManualClock
from services.common.errors import Failure, failures_from_status, field_violations, status_from_error
from services.common.rules import Rules
from services.groups.app import GroupsApp
from tests.support.inprocess import serve
from tests.support.request_ids import refused_as_reused

STORE = common_groups_pb2.GROUP_KIND_STORE
LIVE = common_groups_pb2.GROUP_KIND_LIVE
FOLLOW = common_groups_pb2.Threshold(follow=common_groups_pb2.FollowThreshold())


def small_rules(rules: Rules) -> Rules:
    """Store: sub-groups of 3, sets of 7 in at most 4 sub-groups, 9 members a store (L4: 20).
    Live: sub-groups of 2, at most 3 of them (6 < the set cap of 10)."""
    return dataclasses.replace(
        rules,
        store_groups=dataclasses.replace(
            rules.store_groups,
            sub_group_capacity=3,
            group_set_capacity=7,
            sub_groups_per_set=4,
            members_by_level=(9, 9, 9, 9, 20),
        ),
        live_groups=dataclasses.replace(
            rules.live_groups, sub_group_capacity=2, group_set_capacity=10, sub_groups_per_set=3
        ),
    )


@pytest.fixture
async def stub(db_url: str, rules: Rules, clock: ManualClock) -> AsyncIterator[groups_pb2_grpc.GroupsServiceStub]:
    async with serve(GroupsApp, db_url, rules=small_rules(rules), clock=clock) as channel:
        yield groups_pb2_grpc.GroupsServiceStub(channel)


@pytest.fixture
async def default_stub(
    db_url: str, rules: Rules, clock: ManualClock
) -> AsyncIterator[groups_pb2_grpc.GroupsServiceStub]:
    async with serve(GroupsApp, db_url, rules=rules, clock=clock) as channel:
        yield groups_pb2_grpc.GroupsServiceStub(channel)


def store_set(name: str = "店铺粉丝群", store: str = "store-1", owner: str = "main-1", **kw: Any) -> Any:
    kw.setdefault("threshold", FOLLOW)
    return groups_pb2.CreateGroupSetRequest(kind=STORE, name=name, store_id=store, owner_account_id=owner, **kw)


def live_set(name: str = "主播铁粉群", streamer: str = "host-1", **kw: Any) -> Any:
    kw.setdefault(
        "threshold",
        common_groups_pb2.Threshold(
            fan_level=common_groups_pb2.FanLevelThreshold(min_level=common_groups_pb2.FAN_LEVEL_IRON)
        ),
    )
    return groups_pb2.CreateGroupSetRequest(kind=LIVE, name=name, streamer_id=streamer, owner_account_id=streamer, **kw)


async def create(stub: groups_pb2_grpc.GroupsServiceStub, request: Any) -> groups_pb2.GroupSet:
    return (await stub.CreateGroupSet(request)).group_set


async def join(
    stub: groups_pb2_grpc.GroupsServiceStub, gs: groups_pb2.GroupSet, consumer: str, **kw: Any
) -> groups_pb2.AddMemberResponse:
    kw.setdefault("threshold_version", gs.threshold_version)
    return await stub.AddMember(groups_pb2.AddMemberRequest(group_set_id=gs.group_set_id, consumer_id=consumer, **kw))


async def get(stub: groups_pb2_grpc.GroupsServiceStub, gs: groups_pb2.GroupSet) -> groups_pb2.GroupSet:
    return (await stub.GetGroupSet(groups_pb2.GetGroupSetRequest(group_set_id=gs.group_set_id))).group_set


async def refusal(call: Awaitable[Message]) -> tuple[grpc.StatusCode, list[Failure], grpc.aio.AioRpcError]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    return error.code(), failures_from_status(status_from_error(error)), error


def joins_counted(outcome: str, rule: str) -> float:
    labels = {"kind": "store", "outcome": outcome, "rule": rule}
    return REGISTRY.get_sample_value("qun_groups_joins_total", labels) or 0.0


def rules_of(failures: list[Failure]) -> set[tuple[str, str]]:
    return {(f.rule_id, f.reason) for f in failures}


# -- creating (T5, C9, T2, T4) ------------------------------------------------------------------


async def test_t5_create_makes_the_first_sub_group_named_after_the_set(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    gs = await create(stub, live_set(admin_ids=["admin-1"], newcomer_reply="欢迎"))
    assert gs.group_set_id.startswith("gs_")
    assert [(s.seq, s.name, s.capacity) for s in gs.sub_groups] == [(1, "主播铁粉群1", 2)]
    assert (gs.kind, gs.capacity, gs.threshold_version, list(gs.admin_ids)) == (LIVE, 10, 1, ["admin-1"])
    assert gs.threshold.fan_level.min_level == common_groups_pb2.FAN_LEVEL_IRON
    assert gs == await get(stub, gs)


async def test_c9_password_is_never_returned_only_its_digest(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    threshold = common_groups_pb2.Threshold(password=common_groups_pb2.PasswordThreshold(password="芝麻开门"))
    gs = await create(stub, store_set(threshold=threshold))
    assert gs.threshold.WhichOneof("rule") == "password"
    assert gs.threshold.password.password == ""
    assert passwords.verify("芝麻开门", gs.password_digest)
    assert (await get(stub, gs)).threshold.password.password == ""


async def test_t2_l0_store_may_create_5_sets_and_l4_10(
    default_stub: groups_pb2_grpc.GroupsServiceStub, clock: ManualClock
) -> None:
    stub = default_stub
    for i in range(5):
        await create(stub, store_set(name=f"群{i}"))
    code, failures, _ = await refusal(stub.CreateGroupSet(store_set(name="群5")))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    [failure] = failures
    assert (failure.rule_id, failure.figures) == ("T2", {"group_sets": "5", "cap": "5", "level": "0"})

    # A level recorded for an earlier month holds until a newer one is recorded.
    await stub.SetGroupLevel(groups_pb2.SetGroupLevelRequest(store_id="store-1", month="2025-12", level=4))
    level = await stub.GetGroupLevel(groups_pb2.GetGroupLevelRequest(store_id="store-1"))
    assert level.level == 4
    for i in range(5, 10):
        await create(stub, store_set(name=f"群{i}"))
    code, failures, _ = await refusal(stub.CreateGroupSet(store_set(name="群10")))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failures[0].figures == {"group_sets": "10", "cap": "10", "level": "4"}

    # Next month the store drops to L1: no more sets (the ten stay).
    await stub.SetGroupLevel(groups_pb2.SetGroupLevelRequest(store_id="store-1", month="2026-02", level=1))
    clock.set(datetime(2026, 2, 1, tzinfo=UTC))
    assert (await stub.GetGroupLevel(groups_pb2.GetGroupLevelRequest(store_id="store-1"))).level == 1
    _, failures, _ = await refusal(stub.CreateGroupSet(store_set(name="群10")))
    assert failures[0].figures == {"group_sets": "10", "cap": "5", "level": "1"}
    listed = await stub.ListGroupSets(groups_pb2.ListGroupSetsRequest(store_id="store-1"))
    assert len(listed.group_sets) == 10


async def test_t4_streamer_group_set_cap(stub: groups_pb2_grpc.GroupsServiceStub, rules: Rules) -> None:
    cap = rules.live_groups.group_sets_per_streamer
    for i in range(cap):
        await create(stub, live_set(name=f"粉丝群{i}"))
    code, failures, _ = await refusal(stub.CreateGroupSet(live_set(name="one too many")))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (failures[0].rule_id, failures[0].figures["cap"]) == ("T4", str(cap))


async def test_t2_t4_a_store_named_like_a_streamers_key_keeps_its_own_caps(
    stub: groups_pb2_grpc.GroupsServiceStub, rules: Rules
) -> None:
    """Ids may hold ``:`` but no ``/``: store "streamer:host-1" and streamer "host-1" are two owners (ADR 0014)."""
    for i in range(rules.live_groups.group_sets_per_streamer):
        await create(stub, live_set(name=f"粉丝群{i}"))
    twin = await create(stub, store_set(store="streamer:host-1", owner="streamer-store-main"))
    await join(stub, twin, "c1")
    code, failures, _ = await refusal(stub.CreateGroupSet(live_set(name="one too many")))
    assert (code, failures[0].rule_id) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "T4")
    assert (await get(stub, twin)).member_count == 1
    listed = await stub.ListGroupSets(groups_pb2.ListGroupSetsRequest(store_id="streamer:host-1"))
    assert [g.group_set_id for g in listed.group_sets] == [twin.group_set_id]


async def test_create_request_id_replay_returns_the_first_answer(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    first = await create(stub, store_set(request_id="req-1"))
    assert await create(stub, store_set(request_id="req-1")) == first
    # The same request after the set was renamed: still the set it created (the request is compared, not the set).
    await stub.UpdateSettings(groups_pb2.UpdateSettingsRequest(group_id=first.group_set_id, name="改名了"))
    assert (await create(stub, store_set(request_id="req-1"))).group_set_id == first.group_set_id
    # Another request with the same id is refused, and creates nothing.
    await refused_as_reused(stub.CreateGroupSet(store_set(request_id="req-1", name="another name")), "req-1")
    listed = await stub.ListGroupSets(groups_pb2.ListGroupSetsRequest(store_id="store-1"))
    assert [g.group_set_id for g in listed.group_sets] == [first.group_set_id]
    # A password is no part of the comparison (its digest is salted anew each time, the password never kept).
    secret = common_groups_pb2.Threshold(password=common_groups_pb2.PasswordThreshold(password="芝麻开门"))
    locked = await create(stub, store_set(name="密码群", threshold=secret, request_id="req-2"))
    assert (await create(stub, store_set(name="密码群", threshold=secret, request_id="req-2"))) == locked


async def test_removal_request_id_replays_the_removal_or_is_refused_for_another(
    stub: groups_pb2_grpc.GroupsServiceStub,
) -> None:
    gs = await create(stub, store_set())
    await join(stub, gs, "troll")

    def expel(reason: str) -> Any:
        return stub.ExpelMember(
            groups_pb2.ExpelMemberRequest(
                request_id="rm-1",
                group_set_id=gs.group_set_id,
                consumer_id="troll",
                cause=common_groups_pb2.REMOVAL_CAUSE_OWNER,
                reason=reason,
            )
        )

    first = await expel("骂人")
    again = await expel("骂人")
    assert again.replayed and again.removal == first.removal and not first.replayed
    await refused_as_reused(expel("another reason"), "rm-1")


# -- joining (T1, T5, C13, T2, T4, C11, R3) ------------------------------------------------------


async def test_t5_second_sub_group_is_created_when_the_first_is_full(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    gs = await create(stub, store_set(name="主播铁粉群"))
    placed = [(await join(stub, gs, f"c{i}")).membership.sub_group_name for i in range(4)]
    assert placed == ["主播铁粉群1", "主播铁粉群1", "主播铁粉群1", "主播铁粉群2"]
    now = await get(stub, gs)
    assert [(s.seq, s.name, s.member_count) for s in now.sub_groups] == [(1, "主播铁粉群1", 3), (2, "主播铁粉群2", 1)]
    assert now.member_count == 4

    # A leave frees room in sub-group 1, which the next join fills before sub-group 2.
    await stub.RemoveMember(groups_pb2.RemoveMemberRequest(group_set_id=gs.group_set_id, consumer_id="c0"))
    assert (await join(stub, gs, "c9")).membership.sub_group_name == "主播铁粉群1"


async def test_c13_a_consumer_joins_a_set_once_but_many_sets(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    a = await create(stub, store_set(name="A"))
    b = await create(stub, store_set(name="B"))
    first = await join(stub, a, "alice")
    # Joining again is idempotent: the membership she has, flagged, and nothing written (one per set, C13).
    again = await join(stub, a, "alice")
    assert again.already_member and not first.already_member
    assert (again.membership.sub_group_id, again.membership.joined_at) == (
        first.membership.sub_group_id,
        first.membership.joined_at,
    )
    await join(stub, b, "alice")  # another set of the same store is fine (C13)
    assert (await get(stub, a)).member_count == 1

    check = await stub.CheckJoin(groups_pb2.CheckJoinRequest(group_set_id=a.group_set_id, consumer_id="alice"))
    assert not check.verdict.allowed
    assert [f.rule_id for f in check.verdict.failures] == ["C13"]
    memberships = await stub.ListMemberships(groups_pb2.ListMembershipsRequest(consumer_id="alice", page_size=1))
    assert len(memberships.memberships) == 1 and memberships.next_page_token
    rest = await stub.ListMemberships(
        groups_pb2.ListMembershipsRequest(consumer_id="alice", page_token=memberships.next_page_token)
    )
    ids = {m.group_set_id for m in [*memberships.memberships, *rest.memberships]}
    assert ids == {a.group_set_id, b.group_set_id} and not rest.next_page_token


async def test_t1_full_set_refuses_with_resource_exhausted(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    gs = await create(stub, store_set())
    for i in range(7):
        await join(stub, gs, f"c{i}")
    refused_before = joins_counted("refused", "T1")
    code, failures, error = await refusal(join(stub, gs, "late"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert joins_counted("refused", "T1") == refused_before + 1  # qun_groups_joins_total{rule="T1"}
    assert rules_of(failures) == {("T1", "GROUP_SET_FULL")}
    assert failures[0].figures == {"members": "7", "cap": "7"}
    check = await stub.CheckJoin(groups_pb2.CheckJoinRequest(group_set_id=gs.group_set_id, consumer_id="late"))
    assert [(f.rule_id, f.reason) for f in check.verdict.failures] == [("T1", "GROUP_SET_FULL")]
    now = await get(stub, gs)
    assert [s.member_count for s in now.sub_groups] == [3, 3, 1]


async def test_t4_live_set_refuses_when_all_sub_groups_are_full(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    gs = await create(stub, live_set())
    for i in range(6):
        await join(stub, gs, f"fan{i}")
    code, failures, _ = await refusal(join(stub, gs, "fan6"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rules_of(failures) == {("T4", "SUB_GROUPS_FULL")}
    assert [s.name for s in (await get(stub, gs)).sub_groups] == ["主播铁粉群1", "主播铁粉群2", "主播铁粉群3"]


async def test_t2_store_member_cap_counts_all_its_sets(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    a = await create(stub, store_set(name="A"))
    b = await create(stub, store_set(name="B"))
    other = await create(stub, store_set(name="other", store="store-2", owner="main-2"))
    for i in range(5):
        await join(stub, a, f"a{i}")
    for i in range(4):
        await join(stub, b, f"b{i}")
    code, failures, _ = await refusal(join(stub, b, "b4"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rules_of(failures) == {("T2", "ACCOUNT_FULL")}
    assert failures[0].figures == {"members": "9", "cap": "9", "level": "0"}
    check = await stub.CheckJoin(groups_pb2.CheckJoinRequest(group_set_id=a.group_set_id, consumer_id="x"))
    assert [(f.rule_id, f.reason, dict(f.figures)) for f in check.verdict.failures] == [
        ("T2", "ACCOUNT_FULL", {"members": "9", "cap": "9", "level": "0"})
    ]
    await join(stub, other, "b4")  # another store's cap is its own

    # L4 raises the store's member cap (T2).
    await stub.SetGroupLevel(groups_pb2.SetGroupLevelRequest(store_id="store-1", month="2026-01", level=4))
    await join(stub, b, "b4")


async def test_join_request_id_replay_returns_the_first_answer(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    gs = await create(stub, store_set(newcomer_reply="欢迎新人"))
    first = await join(stub, gs, "alice", request_id="join-1")
    assert first.newcomer_reply == "欢迎新人"
    again = await join(stub, gs, "alice", request_id="join-1")
    assert again == first
    assert (await get(stub, gs)).member_count == 1
    found = await stub.GetMembership(groups_pb2.GetMembershipRequest(group_set_id=gs.group_set_id, consumer_id="alice"))
    assert found.membership == first.membership
    # Still the first answer after the member left; nothing is added.
    await stub.RemoveMember(groups_pb2.RemoveMemberRequest(group_set_id=gs.group_set_id, consumer_id="alice"))
    assert await join(stub, gs, "alice", request_id="join-1") == first
    assert (await get(stub, gs)).member_count == 0
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetMembership(groups_pb2.GetMembershipRequest(group_set_id=gs.group_set_id, consumer_id="alice"))
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND


async def test_r3_newcomer_reply_is_shown_once_even_after_leave_and_rejoin(
    stub: groups_pb2_grpc.GroupsServiceStub,
) -> None:
    gs = await create(stub, store_set(newcomer_reply="欢迎新人"))
    assert (await join(stub, gs, "alice")).newcomer_reply == "欢迎新人"
    await stub.RemoveMember(groups_pb2.RemoveMemberRequest(group_set_id=gs.group_set_id, consumer_id="alice"))
    rejoined = await join(stub, gs, "alice")
    assert rejoined.newcomer_reply == ""
    assert rejoined.membership.consumer_id == "alice"
    assert (await join(stub, gs, "bob")).newcomer_reply == "欢迎新人"


async def test_c11_threshold_change_bumps_version_and_aborts_stale_joins(
    stub: groups_pb2_grpc.GroupsServiceStub,
) -> None:
    gs = await create(stub, store_set())
    await join(stub, gs, "alice")
    spend = common_groups_pb2.Threshold(spend=common_groups_pb2.SpendThreshold(min_spend_fen=10_000))
    change = groups_pb2.UpdateSettingsRequest(group_id=gs.group_set_id, threshold=spend)
    updated = (await stub.UpdateSettings(change)).group_set
    assert updated.threshold_version == gs.threshold_version + 1
    assert updated.threshold.spend.min_spend_fen == 10_000
    assert updated.member_count == 1  # members already inside stay (C11)

    code, _, error = await refusal(join(stub, gs, "bob"))  # checked the old threshold
    assert code == grpc.StatusCode.ABORTED
    await join(stub, updated, "bob")

    # Other settings leave the version alone; only present fields change.
    change = groups_pb2.UpdateSettingsRequest(group_id=gs.group_set_id, name="新名字", is_public=True)
    renamed = (await stub.UpdateSettings(change)).group_set
    assert (renamed.threshold_version, renamed.is_public, renamed.name) == (updated.threshold_version, True, "新名字")
    assert renamed.newcomer_reply == updated.newcomer_reply
    assert [s.name for s in renamed.sub_groups] == ["新名字1"]


async def test_r3_settings_on_a_sub_group_are_refused(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    gs = await create(stub, store_set())
    sub_id = gs.sub_groups[0].sub_group_id
    code, failures, _ = await refusal(
        stub.UpdateSettings(groups_pb2.UpdateSettingsRequest(group_id=sub_id, announcement="hi"))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    [failure] = failures
    assert (failure.rule_id, failure.figures) == ("R3", {"group_set_id": gs.group_set_id})
    code, _, _ = await refusal(stub.UpdateSettings(groups_pb2.UpdateSettingsRequest(group_id="gs_unknown")))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_c10_threshold_kind_must_match_the_group_kind(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    code, _, error = await refusal(stub.CreateGroupSet(live_set(threshold=FOLLOW)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(status_from_error(error))] == ["threshold"]
    gs = await create(stub, live_set())
    code, _, error = await refusal(
        stub.UpdateSettings(groups_pb2.UpdateSettingsRequest(group_id=gs.group_set_id, threshold=FOLLOW))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert (await get(stub, gs)).threshold_version == 1


# -- admins (R2) ----------------------------------------------------------------------------------


async def test_r2_tenth_super_admin_is_refused(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    gs = await create(stub, store_set(admin_ids=["sub-0"]))
    for i in range(1, 9):
        await stub.AddAdmin(groups_pb2.AddAdminRequest(group_set_id=gs.group_set_id, account_id=f"sub-{i}"))
    again = await stub.AddAdmin(groups_pb2.AddAdminRequest(group_set_id=gs.group_set_id, account_id="sub-3"))
    assert len(again.group_set.admin_ids) == 9  # adding an existing admin changes nothing
    code, failures, _ = await refusal(
        stub.AddAdmin(groups_pb2.AddAdminRequest(group_set_id=gs.group_set_id, account_id="sub-9"))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert (failures[0].rule_id, failures[0].figures["admins"], failures[0].figures["cap"]) == ("R2", "9", "9")

    owner = groups_pb2.AddAdminRequest(group_set_id=gs.group_set_id, account_id="main-1")
    code, _, _ = await refusal(stub.AddAdmin(owner))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    await stub.RemoveAdmin(groups_pb2.RemoveAdminRequest(group_set_id=gs.group_set_id, account_id="sub-0"))
    code, _, _ = await refusal(
        stub.RemoveAdmin(groups_pb2.RemoveAdminRequest(group_set_id=gs.group_set_id, account_id="sub-0"))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    await stub.AddAdmin(groups_pb2.AddAdminRequest(group_set_id=gs.group_set_id, account_id="sub-9"))

    check = await stub.CheckJoin(groups_pb2.CheckJoinRequest(group_set_id=gs.group_set_id, consumer_id="sub-9"))
    assert check.is_staff and check.verdict.allowed
    check = await stub.CheckJoin(groups_pb2.CheckJoinRequest(group_set_id=gs.group_set_id, consumer_id="main-1"))
    assert check.is_staff
    check = await stub.CheckJoin(groups_pb2.CheckJoinRequest(group_set_id=gs.group_set_id, consumer_id="buyer"))
    assert not check.is_staff and check.group_set.group_set_id == gs.group_set_id


async def test_r2_create_with_ten_admins_is_refused(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    code, failures, _ = await refusal(stub.CreateGroupSet(store_set(admin_ids=[f"sub-{i}" for i in range(10)])))
    assert (code, failures[0].rule_id) == (grpc.StatusCode.FAILED_PRECONDITION, "R2")


# -- dissolving ------------------------------------------------------------------------------------


async def test_dissolve_frees_the_stores_capacity(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    a = await create(stub, store_set(name="A"))
    b = await create(stub, store_set(name="B"))
    for i in range(7):
        await join(stub, a, f"a{i}")
    await join(stub, b, "b0")
    await join(stub, b, "b1")
    _, failures, _ = await refusal(join(stub, b, "b2"))
    assert rules_of(failures) == {("T2", "ACCOUNT_FULL")}

    await stub.DissolveGroupSet(groups_pb2.DissolveGroupSetRequest(group_set_id=a.group_set_id))
    await stub.DissolveGroupSet(groups_pb2.DissolveGroupSetRequest(group_set_id=a.group_set_id))  # a retry: no-op
    for call in (
        stub.GetGroupSet(groups_pb2.GetGroupSetRequest(group_set_id=a.group_set_id)),
        stub.CheckJoin(groups_pb2.CheckJoinRequest(group_set_id=a.group_set_id, consumer_id="a0")),
        join(stub, a, "zz"),
    ):
        code, _, _ = await refusal(call)
        assert code == grpc.StatusCode.NOT_FOUND
    for i in range(2, 7):
        await join(stub, b, f"b{i}")  # refused before the dissolve (T2), now room up to b's own cap
    assert (await get(stub, b)).member_count == 7
    memberships = await stub.ListMemberships(groups_pb2.ListMembershipsRequest(consumer_id="a0"))
    assert list(memberships.memberships) == []
    listed = await stub.ListGroupSets(groups_pb2.ListGroupSetsRequest(store_id="store-1"))
    assert [g.group_set_id for g in listed.group_sets] == [b.group_set_id]
    for name in ("C", "D", "E", "F"):  # the dissolved set no longer counts toward T2
        await create(stub, store_set(name=name))


async def test_remove_member_who_is_not_a_member_is_not_found(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    gs = await create(stub, store_set())
    code, _, _ = await refusal(
        stub.RemoveMember(groups_pb2.RemoveMemberRequest(group_set_id=gs.group_set_id, consumer_id="nobody"))
    )
    assert code == grpc.StatusCode.NOT_FOUND


# -- lists -----------------------------------------------------------------------------------------


async def test_list_group_sets_pages_with_an_opaque_token(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    created = {(await create(stub, store_set(name=f"群{i}"))).group_set_id for i in range(5)}
    await create(stub, live_set())
    seen: list[str] = []
    token = ""
    while True:
        request = groups_pb2.ListGroupSetsRequest(store_id="store-1", page_size=2, page_token=token)
        page = await stub.ListGroupSets(request)
        seen += [g.group_set_id for g in page.group_sets]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(created)
    live = await stub.ListGroupSets(groups_pb2.ListGroupSetsRequest(streamer_id="host-1"))
    assert [g.kind for g in live.group_sets] == [LIVE]
    code, _, error = await refusal(stub.ListGroupSets(groups_pb2.ListGroupSetsRequest(store_id="s", streamer_id="h")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _, error = await refusal(stub.ListGroupSets(groups_pb2.ListGroupSetsRequest(store_id="s", page_token="@@")))
    assert [v.field for v in field_violations(status_from_error(error))] == ["page_token"]


# -- input and credentials --------------------------------------------------------------------------


async def test_invalid_argument_names_every_bad_field(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    request = groups_pb2.CreateGroupSetRequest(
        kind=STORE,
        name="x" * 65,
        owner_account_id="bad id!",
        threshold=common_groups_pb2.Threshold(password=common_groups_pb2.PasswordThreshold(password="p" * 33)),
        announcement="a" * 2001,
        admin_ids=["ok-1", ""],
    )
    code, _, error = await refusal(stub.CreateGroupSet(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in field_violations(status_from_error(error))]
    assert fields == [
        "name",
        "owner_account_id",
        "store_id",
        "threshold.password.password",
        "announcement",
        "admin_ids[1]",
    ]

    spend = common_groups_pb2.Threshold(spend=common_groups_pb2.SpendThreshold(min_spend_fen=-1))
    crowd = common_groups_pb2.Threshold(crowd=common_groups_pb2.CrowdThreshold(crowd_id=""))
    none_level = common_groups_pb2.Threshold(
        fan_level=common_groups_pb2.FanLevelThreshold(min_level=common_groups_pb2.FAN_LEVEL_NONE)
    )
    for req, field in (
        (store_set(threshold=spend), "threshold.spend.min_spend_fen"),
        (store_set(threshold=crowd), "threshold.crowd.crowd_id"),
        (live_set(threshold=none_level), "threshold.fan_level.min_level"),
        (groups_pb2.CreateGroupSetRequest(name="n", store_id="s", owner_account_id="o", threshold=FOLLOW), "kind"),
        (groups_pb2.CreateGroupSetRequest(kind=STORE, name="n", store_id="s", owner_account_id="o"), "threshold"),
        (store_set(admin_ids=["main-1"]), "admin_ids[0]"),
    ):
        _, _, error = await refusal(stub.CreateGroupSet(req))
        assert [v.field for v in field_violations(status_from_error(error))] == [field]

    code, _, error = await refusal(
        stub.AddMember(groups_pb2.AddMemberRequest(group_set_id="", consumer_id="x y", threshold_version=0))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(status_from_error(error))] == [
        "group_set_id",
        "consumer_id",
        "threshold_version",
    ]
    _, _, error = await refusal(
        stub.SetGroupLevel(groups_pb2.SetGroupLevelRequest(store_id="s", month="2026-13", level=5))
    )
    assert [v.field for v in field_violations(status_from_error(error))] == ["month", "level"]


async def test_unknown_group_set_is_not_found(stub: groups_pb2_grpc.GroupsServiceStub) -> None:
    code, _, _ = await refusal(stub.GetGroupSet(groups_pb2.GetGroupSetRequest(group_set_id="gs_nope")))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _, _ = await refusal(
        stub.AddMember(groups_pb2.AddMemberRequest(group_set_id="gs_nope", consumer_id="c", threshold_version=1))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_no_internal_token_is_unauthenticated(db_url: str, rules: Rules, clock: ManualClock) -> None:
    from services.common.server import Server
    from tests.support.inprocess import migrate, settings_for

    await migrate("groups", db_url)
    server = Server(GroupsApp(settings_for("groups", db_url), rules, clock), serve_metrics_http=False)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            bare = groups_pb2_grpc.GroupsServiceStub(channel)
            code, _, _ = await refusal(bare.GetGroupSet(groups_pb2.GetGroupSetRequest(group_set_id="gs_x")))
            assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop()
