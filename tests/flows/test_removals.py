"""Removing members through the gateway (SPEC R5, with C5, X4): the owner and super admins remove, admins
not the owner nor another admin, a bar keeps the consumer out of the store's groups, a store's blacklist
removes, the seat frees, the removed member reads why. Small caps come from a rules file."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gateway.auth import Principal, Role
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import gateway_pb2, operations_pb2, operations_pb2_grpc
from services.common.errors import error_info, failures_from_status, status_from_error
from tests.support import facts
from tests.support.stack import GatewayClient, RunningStack, running_stack, unique

RULES = """
[store_groups]
sub_group_capacity = 2
group_set_capacity = 4
sub_groups_per_set = 2
group_sets_by_level = [2, 2, 2, 2, 2]
members_by_level = [8, 8, 8, 8, 8]
"""
FOLLOW = common_pb2.Threshold(follow=common_pb2.FollowThreshold())
OPS = Principal("ops-1", Role.OPS)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    tmp = tmp_path_factory.mktemp(f"removals-{request.param}")
    rules = Path(tmp / "rules.toml")
    rules.write_text(RULES)
    with running_stack(tmp, request.param, extra_env={"QUN_RULES_FILE": str(rules)}) as running:
        yield running


class Store:
    """A store with a group-set, two sub-accounts appointed super admins and one that is not."""

    def __init__(self, gw: GatewayClient, store_id: str, main_id: str, admins: tuple[str, str], sub: str) -> None:
        self.gw = gw
        self.store_id, self.main_id, self.admins, self.sub = store_id, main_id, admins, sub
        self.group_set_id = ""

    @property
    def owner(self) -> Principal:
        return self.gw.main_account(self.main_id, self.store_id)

    def admin(self, index: int = 0) -> Principal:
        return Principal(self.admins[index], Role.STORE_SUB, self.store_id)

    async def new_set(self, name: str = "粉丝群") -> str:
        created = await self.gw.groups.CreateGroupSet(
            gateway_pb2.CreateGroupSetRequest(kind=common_pb2.GROUP_KIND_STORE, name=name, threshold=FOLLOW),
            metadata=self.gw.auth(self.owner),
        )
        return created.group_set.group_set_id


async def new_store(gw: GatewayClient, platform: RunningStack) -> Store:
    store = Store(gw, unique("s"), unique("m"), (unique("a"), unique("a")), unique("b"))
    await gw.report(facts.store(store.store_id, store.main_id, platform.now, sub_accounts=(*store.admins, store.sub)))
    store.group_set_id = await store.new_set()
    for admin in store.admins:
        await gw.groups.AddAdmin(
            gateway_pb2.AddAdminRequest(group_set_id=store.group_set_id, account_id=admin),
            metadata=gw.auth(store.owner),
        )
    return store


async def join(gw: GatewayClient, consumer: str, group_set_id: str) -> gateway_pb2.JoinGroupSetResponse:
    return await gw.groups.JoinGroupSet(
        gateway_pb2.JoinGroupSetRequest(group_set_id=group_set_id), metadata=gw.auth(gw.consumer(consumer))
    )


async def members(gw: GatewayClient, store: Store, count: int, group_set_id: str = "") -> list[str]:
    ids = [unique("c") for _ in range(count)]
    await gw.report([f for c in ids for f in facts.consumer(c, follows=(store.store_id,))])
    for consumer in ids:
        await join(gw, consumer, group_set_id or store.group_set_id)
    return ids


async def staff_join(gw: GatewayClient, store: Store, *accounts: str) -> None:
    """The owner and admins join as members too (their accounts' roles stay as reported)."""
    await gw.report(
        [
            f
            for account in accounts
            for f in (
                facts_pb2.Fact(real_name=facts_pb2.RealNameFact(consumer_id=account, verified=True)),
                facts_pb2.Fact(taoqi_score=facts_pb2.TaoqiScoreFact(consumer_id=account, score=600)),
                facts_pb2.Fact(
                    follow=facts_pb2.FollowFact(store_id=store.store_id, consumer_id=account, following=True)
                ),
            )
        ]
    )
    for account in accounts:
        await join(gw, account, store.group_set_id)


async def remove(
    gw: GatewayClient, by: Principal, group_set_id: str, consumer: str, **kwargs: object
) -> gateway_pb2.RemoveMemberResponse:
    return await gw.groups.RemoveMember(
        gateway_pb2.RemoveMemberRequest(group_set_id=group_set_id, consumer_id=consumer, **kwargs),  # type: ignore[arg-type]
        metadata=gw.auth(by),
    )


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


def rules_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [f.rule_id for f in failures_from_status(status_from_error(error))]


async def member_count(gw: GatewayClient, store: Store, group_set_id: str = "") -> int:
    fetched = await gw.groups.GetGroupSet(
        gateway_pb2.GetGroupSetRequest(group_set_id=group_set_id or store.group_set_id), metadata=gw.auth(store.owner)
    )
    return fetched.group_set.member_count


async def removals_of(gw: GatewayClient, consumer: str) -> list[gateway_pb2.Removal]:
    listed = await gw.groups.ListMyRemovals(
        gateway_pb2.ListMyRemovalsRequest(), metadata=gw.auth(gw.consumer(consumer))
    )
    return list(listed.removals)


async def audit(gw: GatewayClient, store: Store) -> list[tuple[str, str, str, str]]:
    entries = await operations_pb2_grpc.GroupOperationsServiceStub(gw.channel).ListAuditEntries(
        operations_pb2.ListAuditEntriesRequest(store_id=store.store_id, page_size=100), metadata=gw.auth(store.owner)
    )
    return [(e.actor, e.action, e.old_value, e.new_value) for e in entries.entries if e.action.endswith(".remove")]


def removals_counted(platform: RunningStack, cause: str) -> float:
    with urllib.request.urlopen(platform.stack.endpoints["groups"].metrics_url, timeout=5) as page:
        text = page.read().decode()
    found = re.search(rf'^qun_groups_removals_total{{cause="{cause}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_R5_owner_removes_a_member_the_seat_frees_and_the_member_reads_why(
    gw: GatewayClient, platform: RunningStack
) -> None:
    store = await new_store(gw, platform)
    spammer, *_ = await members(gw, store, 4)  # the set is full (T1 under the test rules)
    newcomer = unique("c")
    await gw.report(facts.consumer(newcomer, follows=(store.store_id,)))
    assert "T1" in rules_of(await refused(join(gw, newcomer, store.group_set_id)))
    counted = removals_counted(platform, "owner")

    removed = await remove(gw, store.owner, store.group_set_id, spammer, reason="发广告")
    [removal] = removed.removals
    assert (removal.group_set_id, removal.cause, removal.reason, removal.barred) == (
        store.group_set_id,
        common_pb2.REMOVAL_CAUSE_OWNER,
        "发广告",
        False,
    )
    assert await member_count(gw, store) == 3  # the seat is free …
    assert (await join(gw, newcomer, store.group_set_id)).membership.group_set_id == store.group_set_id  # … and taken

    mine = await gw.groups.ListMyGroups(gateway_pb2.ListMyGroupsRequest(), metadata=gw.auth(gw.consumer(spammer)))
    assert list(mine.memberships) == []
    [why] = await removals_of(gw, spammer)  # the removed member reads why
    assert (why.group_set_name, why.cause, why.reason, why.store_id) == (
        "粉丝群",
        common_pb2.REMOVAL_CAUSE_OWNER,
        "发广告",
        store.store_id,
    )
    assert why.HasField("removed_at")
    assert (store.main_id, "member.remove", spammer, "owner: 发广告") in await audit(gw, store)  # X4
    assert removals_counted(platform, "owner") == counted + 1
    missing = await refused(remove(gw, store.owner, store.group_set_id, spammer))
    assert missing.code() is grpc.StatusCode.NOT_FOUND  # not a member any more


async def test_R5_admins_remove_members_but_not_the_owner_nor_another_admin(
    gw: GatewayClient, platform: RunningStack
) -> None:
    store = await new_store(gw, platform)
    await staff_join(gw, store, store.main_id, *store.admins)
    [fan] = await members(gw, store, 1)
    first, second = store.admins

    by_admin = await remove(gw, store.admin(0), store.group_set_id, fan, reason="刷屏")
    assert by_admin.removals[0].cause == common_pb2.REMOVAL_CAUSE_ADMIN
    for target in (second, store.main_id, first):  # another admin, the owner, themselves
        denied = await refused(remove(gw, store.admin(0), store.group_set_id, target))
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED, target
        info = error_info(status_from_error(denied))
        assert info is not None and info.metadata["rules"] == "R5"
    denied = await refused(remove(gw, store.owner, store.group_set_id, store.main_id))
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED  # nobody removes the owner (R1)
    for outsider in (Principal(store.sub, Role.STORE_SUB, store.store_id), gw.consumer(fan), OPS):
        denied = await refused(remove(gw, outsider, store.group_set_id, second))
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    assert await member_count(gw, store) == 3  # the owner and both admins are still in

    await remove(gw, store.owner, store.group_set_id, second, reason="换岗")  # the owner may remove an admin
    assert await member_count(gw, store) == 2
    entries = await audit(gw, store)
    assert (first, "member.remove", fan, "admin: 刷屏") in entries and (
        store.main_id,
        "member.remove",
        second,
        "owner: 换岗",
    ) in entries


async def test_R5_C5_a_bar_removes_from_every_group_of_the_store_and_refuses_a_rejoin(
    gw: GatewayClient, platform: RunningStack
) -> None:
    store = await new_store(gw, platform)
    other_set = await store.new_set("二群")
    [troll] = await members(gw, store, 1)
    await join(gw, troll, other_set)
    request = gateway_pb2.RemoveMemberRequest(
        request_id=unique("r"), group_set_id=store.group_set_id, consumer_id=troll, reason="骂人", bar=True
    )
    removed = await gw.groups.RemoveMember(request, metadata=gw.auth(store.owner))
    assert [(r.group_set_id, r.cause, r.barred) for r in removed.removals] == [
        (store.group_set_id, common_pb2.REMOVAL_CAUSE_OWNER, True),
        (other_set, common_pb2.REMOVAL_CAUSE_STORE_BLACKLIST, True),
    ]
    again = await gw.groups.RemoveMember(request, metadata=gw.auth(store.owner))  # a retry finishes, changes nothing
    assert again.removals[0] == removed.removals[0] and len(again.removals) == 1
    for group_set_id in (store.group_set_id, other_set):
        rejoin = await refused(join(gw, troll, group_set_id))
        assert rejoin.code() is grpc.StatusCode.FAILED_PRECONDITION and rules_of(rejoin) == ["C5"]
    assert await member_count(gw, store) == 0 and await member_count(gw, store, other_set) == 0
    assert {r.barred for r in await removals_of(gw, troll)} == {True}


async def test_R5_a_store_blacklist_fact_removes_the_consumer_from_the_stores_groups(
    gw: GatewayClient, platform: RunningStack
) -> None:
    store = await new_store(gw, platform)
    listed, platform_listed = await members(gw, store, 2)
    counted = removals_counted(platform, "store_blacklist")
    await gw.report(
        [
            facts_pb2.Fact(
                blacklist=facts_pb2.BlacklistFact(
                    scope=facts_pb2.BLACKLIST_SCOPE_MERCHANT, store_id=store.store_id, consumer_id=listed, listed=True
                )
            ),
            # The platform's blacklist removes nobody (R5 speaks of the store's); they cannot join again (C4).
            facts_pb2.Fact(
                blacklist=facts_pb2.BlacklistFact(
                    scope=facts_pb2.BLACKLIST_SCOPE_PLATFORM, consumer_id=platform_listed, listed=True
                )
            ),
        ]
    )
    assert await member_count(gw, store) == 1
    [why] = await removals_of(gw, listed)
    assert (why.cause, why.barred, why.reason) == (
        common_pb2.REMOVAL_CAUSE_STORE_BLACKLIST,
        True,
        "on the store's blacklist (C5)",
    )
    assert (
        "upstream-test",
        "member.remove",
        listed,
        "store_blacklist, barred from the store (C5): on the store's blacklist (C5)",
    ) in await audit(gw, store)
    assert removals_counted(platform, "store_blacklist") == counted + 1
    await gw.report(  # reported again (an upstream retry): nothing more happens
        [
            facts_pb2.Fact(
                blacklist=facts_pb2.BlacklistFact(
                    scope=facts_pb2.BLACKLIST_SCOPE_MERCHANT, store_id=store.store_id, consumer_id=listed, listed=True
                )
            )
        ]
    )
    assert len(await removals_of(gw, listed)) == 1


async def test_R5_a_member_removed_by_two_stores_reads_the_newest_removal_first_page_by_page(
    gw: GatewayClient, platform: RunningStack
) -> None:
    """Removals are numbered in the order they were written (ADR 0014), across stores and pages."""
    first, second = await new_store(gw, platform), await new_store(gw, platform)
    consumer = unique("c")
    await gw.report(facts.consumer(consumer, follows=(first.store_id, second.store_id)))
    for store in (first, second):
        await join(gw, consumer, store.group_set_id)
    await remove(gw, first.owner, first.group_set_id, consumer, reason="一")
    await remove(gw, second.owner, second.group_set_id, consumer, reason="二")
    mine = gw.auth(gw.consumer(consumer))
    page = await gw.groups.ListMyRemovals(gateway_pb2.ListMyRemovalsRequest(page_size=1), metadata=mine)
    rest = await gw.groups.ListMyRemovals(
        gateway_pb2.ListMyRemovalsRequest(page_size=1, page_token=page.next_page_token), metadata=mine
    )
    assert [(r.store_id, r.reason) for r in [*page.removals, *rest.removals]] == [
        (second.store_id, "二"),
        (first.store_id, "一"),
    ]
    assert rest.next_page_token == ""
