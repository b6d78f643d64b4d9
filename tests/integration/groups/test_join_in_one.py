"""PostgreSQL's one-statement join (``qun_join``) writes exactly what the statement-by-statement path
writes, and hands every case but a plain join back to it.

Two identical store sets, with small caps so new sub-groups are made (T5) and the caps bind (T1,
T2): the same consumers join one set through ``JoinRepository.add_in_one`` and the other through
``JoinRepository.add``. Sub-groups (ids aside), members, first joins, replies, request rows and
every counter must come out the same; a member asking again, a replayed request id, a changed
threshold and a full set must be answered ``None`` (the caller's fallback) and change nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from qun.common.v1 import groups_pb2 as common_groups_pb2
from qun.groups.v1 import groups_pb2, groups_pb2_grpc
from services.common.db import Database
from services.common.rules import Rules
from services.common.settings import async_url
from services.groups.app import GroupsApp
from services.groups.joins import JoinRepository
from services.groups.records import JoinRefusal, JoinResult
from tests.support.inprocess import serve

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
FOLLOW = common_groups_pb2.Threshold(follow=common_groups_pb2.FollowThreshold())


def small(rules: Rules) -> Rules:
    """Sub-groups of 2, sets of 5 in at most 3 sub-groups, 9 members a store."""
    store = dataclasses.replace(
        rules.store_groups,
        sub_group_capacity=2,
        group_set_capacity=5,
        sub_groups_per_set=3,
        members_by_level=(9, 9, 9, 9, 9),
    )
    return dataclasses.replace(rules, store_groups=store)


@pytest.fixture
async def sets(pg_url: str, rules: Rules) -> AsyncIterator[tuple[Database, Rules, str, str]]:
    limits = small(rules)
    async with serve(GroupsApp, pg_url, rules=limits) as channel:
        stub = groups_pb2_grpc.GroupsServiceStub(channel)
        made = []
        for store in ("store-a", "store-b"):
            reply = await stub.CreateGroupSet(
                groups_pb2.CreateGroupSetRequest(
                    kind=common_groups_pb2.GROUP_KIND_STORE,
                    name="粉丝群",
                    store_id=store,
                    owner_account_id=f"main-{store}",
                    threshold=FOLLOW,
                    newcomer_reply="欢迎!",
                )
            )
            made.append(reply.group_set.group_set_id)
    db = Database(async_url(pg_url))
    try:
        yield db, limits, made[0], made[1]
    finally:
        await db.close()


async def join(db: Database, rules: Rules, set_id: str, consumer: str, *, one: bool, **kw: object):  # type: ignore[no-untyped-def]
    args = {"request_id": "", "threshold_version": 1, "messages_hidden": False, **kw}
    if one:
        async with db.single() as connection:
            return await JoinRepository(connection, rules, NOW).add_in_one(set_id, consumer, **args)  # type: ignore[arg-type]
    async with db.write() as connection:
        return await JoinRepository(connection, rules, NOW).add(set_id, consumer, **args)  # type: ignore[arg-type]


async def state(db: Database, set_id: str) -> dict[str, object]:
    async with db.read() as statements:
        subs = (
            await statements.execute(
                text("SELECT seq, name, member_count FROM sub_groups WHERE group_set_id = :s ORDER BY seq"),
                {"s": set_id},
            )
        ).all()
        members = (
            await statements.execute(
                text(
                    "SELECT m.consumer_id, g.seq, m.request_id, m.newcomer_reply, m.messages_hidden "
                    "FROM memberships m JOIN sub_groups g ON g.id = m.sub_group_id "
                    "WHERE m.group_set_id = :s ORDER BY m.consumer_id"
                ),
                {"s": set_id},
            )
        ).all()
        counters = (
            await statements.execute(
                text(
                    "SELECT s.member_count, s.sub_group_count, o.member_count AS owner_members "
                    "FROM group_sets s JOIN capacity_owners o ON o.owner_key = s.owner_key WHERE s.id = :s"
                ),
                {"s": set_id},
            )
        ).one()
        firsts = (
            await statements.execute(text("SELECT count(*) FROM first_joins WHERE group_set_id = :s"), {"s": set_id})
        ).scalar()
        requests = (
            await statements.execute(
                text("SELECT consumer_id, request_id FROM join_requests WHERE group_set_id = :s ORDER BY 1"),
                {"s": set_id},
            )
        ).all()
    return {
        "subs": [tuple(s) for s in subs],
        "members": [tuple(m) for m in members],
        "counters": tuple(counters),
        "first_joins": firsts,
        "requests": [tuple(r) for r in requests],
    }


async def test_the_one_statement_join_writes_what_the_statement_path_writes(
    sets: tuple[Database, Rules, str, str],
) -> None:
    db, rules, one_set, step_set = sets
    for n in range(5):  # T5: sub-groups 1, 2, 3 made as they fill; the fifth fills the set (T1)
        extra = {"request_id": f"r{n}"} if n % 2 else {"messages_hidden": n == 4}
        placed = await join(db, rules, one_set, f"c{n}", one=True, **extra)
        stepped = await join(db, rules, step_set, f"c{n}", one=False, **extra)
        assert isinstance(placed, JoinResult) and isinstance(stepped, JoinResult)
        assert (placed.membership.sub_group_name, placed.newcomer_reply, placed.new_sub_group) == (
            stepped.membership.sub_group_name,
            stepped.newcomer_reply,
            stepped.new_sub_group,
        )
    assert await state(db, one_set) == await state(db, step_set)
    assert (await state(db, one_set))["subs"] == [(1, "粉丝群1", 2), (2, "粉丝群2", 2), (3, "粉丝群3", 1)]

    before = await state(db, one_set)
    # Everything but a plain join goes back to the statement path: a member, a replay, a stale
    # threshold, a full set (T1). None of them changes anything here.
    assert await join(db, rules, one_set, "c0", one=True) is None
    assert await join(db, rules, one_set, "c1", one=True, request_id="r1") is None
    assert await join(db, rules, one_set, "c9", one=True, threshold_version=2) is None
    assert await join(db, rules, one_set, "c9", one=True) is None
    assert await state(db, one_set) == before
    full = await join(db, rules, one_set, "c9", one=False)
    assert isinstance(full, JoinRefusal) and full.rule_ids == ("T1",)
