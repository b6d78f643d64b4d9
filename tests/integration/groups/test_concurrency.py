"""SPEC T6 and C13 with two real replicas of the groups service on one PostgreSQL.

Two ``python -m services.groups`` processes share a database and take a few
hundred concurrent AddMember calls between them: the same consumer into the
same set through both, two sets of one store racing for the store's cap, a
live set whose sub-groups run out. Small caps (from a rules file, as ops would
set them) make every cap bind. Afterwards the database and GetGroupSet must
show no cap exceeded, counters equal to the real rows, nobody twice in a set,
and exactly as many joins granted as the caps allowed.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest

from qun.common.v1 import groups_pb2 as common_groups_pb2
from qun.groups.v1 import groups_pb2, groups_pb2_grpc
from services.common.client import internal_channel
from tests.support.inprocess import INTERNAL_TOKEN
from tests.support.replicas import Replica, replicas

pytestmark = pytest.mark.postgres

STORE_SUB, STORE_SET, STORE_SUBS, STORE_MEMBERS = 7, 40, 10, 60
LIVE_SUB, LIVE_SET, LIVE_SUBS = 5, 30, 4
RULES_TOML = f"""
[store_groups]
sub_group_capacity = {STORE_SUB}
group_set_capacity = {STORE_SET}
sub_groups_per_set = {STORE_SUBS}
members_by_level = [{STORE_MEMBERS}, {STORE_MEMBERS}, {STORE_MEMBERS}, {STORE_MEMBERS}, {STORE_MEMBERS}]

[live_groups]
sub_group_capacity = {LIVE_SUB}
group_set_capacity = {LIVE_SET}
sub_groups_per_set = {LIVE_SUBS}
"""
FOLLOW = common_groups_pb2.Threshold(follow=common_groups_pb2.FollowThreshold())
IRON = common_groups_pb2.Threshold(
    fan_level=common_groups_pb2.FanLevelThreshold(min_level=common_groups_pb2.FAN_LEVEL_IRON)
)


@pytest.fixture
def running(pg_url: str, tmp_path: Path) -> Iterator[list[Replica]]:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES_TOML)
    with replicas("groups", pg_url, tmp_path, env={"QUN_RULES_FILE": str(rules_file)}) as started:
        yield started


@pytest.fixture
async def stubs(running: list[Replica]) -> AsyncIterator[list[groups_pb2_grpc.GroupsServiceStub]]:
    await asyncio.gather(*(r.wait_serving() for r in running))
    channels = [internal_channel(f"127.0.0.1:{r.port}", INTERNAL_TOKEN) for r in running]
    try:
        yield [groups_pb2_grpc.GroupsServiceStub(c) for c in channels]
    finally:
        for channel in channels:
            await channel.close()


@dataclass(frozen=True, eq=False)  # keyed by identity: a GroupSet message is not hashable
class Call:
    replica: int
    group_set: groups_pb2.GroupSet
    consumer: str
    request_id: str = ""


async def add(stubs: list[groups_pb2_grpc.GroupsServiceStub], call: Call) -> tuple[Call, grpc.StatusCode, object]:
    request = groups_pb2.AddMemberRequest(
        request_id=call.request_id,
        group_set_id=call.group_set.group_set_id,
        consumer_id=call.consumer,
        threshold_version=call.group_set.threshold_version,
    )
    try:
        response = await stubs[call.replica].AddMember(request, timeout=60)
        return call, grpc.StatusCode.OK, response
    except grpc.aio.AioRpcError as error:
        return call, error.code(), None


async def test_t6_caps_hold_across_two_replicas_under_concurrent_joins(
    stubs: list[groups_pb2_grpc.GroupsServiceStub], running: list[Replica], pg_url: str
) -> None:
    first, second = stubs

    async def create(stub: groups_pb2_grpc.GroupsServiceStub, request: object) -> groups_pb2.GroupSet:
        return (await stub.CreateGroupSet(request)).group_set

    def store_set(name: str, store: str, owner: str) -> groups_pb2.CreateGroupSetRequest:
        return groups_pb2.CreateGroupSetRequest(
            kind=common_groups_pb2.GROUP_KIND_STORE, name=name, store_id=store, owner_account_id=owner, threshold=FOLLOW
        )

    live_set = groups_pb2.CreateGroupSetRequest(
        kind=common_groups_pb2.GROUP_KIND_LIVE,
        name="主播铁粉群",
        streamer_id="h1",
        owner_account_id="h1",
        threshold=IRON,
    )
    a, b, d, live = await asyncio.gather(
        create(first, store_set("A群", "s1", "m1")),
        create(second, store_set("B群", "s1", "m1")),
        create(first, store_set("D群", "s2", "m2")),
        create(second, live_set),
    )

    calls: list[Call] = []
    # Store s1: two sets racing for the store's 60 (each set holds at most 40).
    calls += [Call(i % 2, a, f"a{i}") for i in range(50)]
    calls += [Call(i % 2, b, f"b{i}") for i in range(50)]
    # Some consumers join both sets of s1 (allowed, C13), and some the same set through both replicas.
    calls += [Call(i % 2, a, f"both{i}") for i in range(10)]
    calls += [Call((i + 1) % 2, b, f"both{i}") for i in range(10)]
    calls += [Call((i + 1) % 2, a, f"a{i}") for i in range(20)]
    # Store s2: one set whose own cap (40) binds first; retries of one request through both replicas.
    calls += [Call(i % 2, d, f"d{i}") for i in range(60)]
    pairs = [(Call(0, d, f"r{i}", f"req-{i}"), Call(1, d, f"r{i}", f"req-{i}")) for i in range(5)]
    calls += [c for pair in pairs for c in pair]
    # Streamer h1: a live set whose 4 sub-groups of 5 run out before its cap of 30.
    calls += [Call(i % 2, live, f"fan{i}") for i in range(40)]
    calls += [Call((i + 1) % 2, live, f"fan{i}") for i in range(10)]
    assert len(calls) == 260

    results = await asyncio.gather(*(add(stubs, c) for c in calls))

    codes = Counter(code for _, code, _ in results)
    expected_codes = {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert set(codes) <= expected_codes, codes
    answers = {call: (code, response) for call, code, response in results}
    replayed = 0
    for one, two in pairs:
        (code1, resp1), (code2, resp2) = answers[one], answers[two]
        assert code1 == code2, "a repeated request_id got two different answers"
        if code1 is grpc.StatusCode.OK:
            assert resp1 == resp2
            replayed += 1
    # A member joining the same set again gets their membership back (idempotent), nothing granted (C13).
    already = sum(1 for _, code, response in results if code is grpc.StatusCode.OK and response.already_member)
    granted = codes[grpc.StatusCode.OK] - replayed - already

    # The caps bound exactly: s1 at its store cap, d at its set cap, live at 4 full sub-groups.
    expected = STORE_MEMBERS + STORE_SET + LIVE_SUB * LIVE_SUBS
    assert granted == expected

    conn = await asyncpg.connect(pg_url)
    try:
        sets = {r["id"]: r for r in await conn.fetch("SELECT * FROM group_sets")}
        subs = await conn.fetch("SELECT * FROM sub_groups")
        rows = await conn.fetch("SELECT group_set_id, consumer_id, sub_group_id FROM memberships")
        owners = {r["owner_key"]: r for r in await conn.fetch("SELECT * FROM capacity_owners")}
    finally:
        await conn.close()

    assert len(rows) == granted
    # C13: nobody in two sub-groups of one set (the key allows one row per set and consumer).
    assert len({(r["group_set_id"], r["consumer_id"]) for r in rows}) == len(rows)
    in_sub = Counter(r["sub_group_id"] for r in rows)
    in_set = Counter(r["group_set_id"] for r in rows)
    for sub in subs:
        gs = sets[sub["group_set_id"]]
        cap = STORE_SUB if gs["kind"] == "store" else LIVE_SUB
        assert sub["member_count"] == in_sub[sub["id"]] <= cap
        assert sub["name"] == f"{gs['name']}{sub['seq']}"
    for gs_id, gs in sets.items():
        set_subs = sorted(s["seq"] for s in subs if s["group_set_id"] == gs_id)
        limit, most = (STORE_SET, STORE_SUBS) if gs["kind"] == "store" else (LIVE_SET, LIVE_SUBS)
        assert gs["member_count"] == in_set[gs_id] <= limit
        assert gs["sub_group_count"] == len(set_subs) <= most
        assert set_subs == list(range(1, len(set_subs) + 1))
    store_total = in_set[a.group_set_id] + in_set[b.group_set_id]
    assert owners["s1"]["member_count"] == store_total == STORE_MEMBERS
    assert owners["s2"]["member_count"] == in_set[d.group_set_id] == STORE_SET
    assert owners["streamer/h1"]["member_count"] == in_set[live.group_set_id] == LIVE_SUB * LIVE_SUBS
    assert {k: o["group_set_count"] for k, o in owners.items()} == {"s1": 2, "s2": 1, "streamer/h1": 1}

    # Both replicas report the same, true state.
    for stub in stubs:
        for gs in (a, b, d, live):
            seen = (await stub.GetGroupSet(groups_pb2.GetGroupSetRequest(group_set_id=gs.group_set_id))).group_set
            assert seen.member_count == in_set[gs.group_set_id] == sum(s.member_count for s in seen.sub_groups)
            assert all(s.member_count <= s.capacity for s in seen.sub_groups)

    for replica in running:
        replica.process.send_signal(signal.SIGTERM)
    for replica in running:
        assert replica.process.wait(20) == 0, replica.log.read_text()
