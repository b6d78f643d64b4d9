"""A store of 500,000 members joins and recommends like a store of 50 (issue: groups over time, Scale).

The data-size check: the same SQL statements run for a join and for the
recommendation candidates in both stores, and none of them reads the
memberships table by a sequential scan (PostgreSQL's plans say so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event

from qun.common.v1 import groups_pb2 as common_pb2
from qun.groups.v1 import groups_pb2, groups_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc
from services.common.client import internal_channel
from services.common.clock import ManualClock
from services.common.rules import Rules
from services.common.server import Server
from services.groups.app import GroupsApp
from tests.support.inprocess import INTERNAL_TOKEN, migrate, settings_for

pytestmark = pytest.mark.postgres

BIG_SETS = 100
SET_CAPACITY = 5000
NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)

SEED = f"""
INSERT INTO capacity_owners (owner_key, kind, member_count, group_set_count, extra_members)
VALUES ('big', 'store', {BIG_SETS * SET_CAPACITY - 10}, {BIG_SETS}, 450000);
INSERT INTO group_levels (store_id, month, level, updated_at) VALUES ('big', '2026-06', 4, now());
INSERT INTO group_sets (id, owner_key, kind, name, owner_account_id, store_id, streamer_id, threshold_kind,
    threshold_params, password_digest, threshold_version, is_public, announcement, newcomer_reply,
    member_count, sub_group_count, request_id, created_at, dissolved_at)
SELECT 'gs_big' || i, 'big', 'store', '大群' || i, 'm-big', 'big', NULL, 'follow', '{{}}', '', 1, true, '', '',
    CASE WHEN i = 1 THEN {SET_CAPACITY - 10} ELSE {SET_CAPACITY} END, 10, NULL, now(), NULL
FROM generate_series(1, {BIG_SETS}) i;
INSERT INTO group_set_owners (group_set_id, owner_key) SELECT 'gs_big' || i, 'big' FROM generate_series(1, {BIG_SETS}) i;
INSERT INTO sub_groups (owner_key, id, group_set_id, seq, name, member_count, created_at)
SELECT 'big', 'sg_big' || i || '_' || j, 'gs_big' || i, j, '大群' || i || j,
    CASE WHEN i = 1 AND j = 10 THEN 490 ELSE 500 END, now()
FROM generate_series(1, {BIG_SETS}) i, generate_series(1, 10) j;
INSERT INTO memberships (owner_key, group_set_id, consumer_id, sub_group_id, request_id, newcomer_reply,
    messages_hidden, joined_at)
SELECT 'big', 'gs_big' || i, 'c' || i || '_' || k, 'sg_big' || i || '_' || ((k - 1) / 500 + 1), NULL, '', false, now()
FROM generate_series(1, {BIG_SETS}) i, generate_series(1, {SET_CAPACITY}) k
WHERE NOT (i = 1 AND k > {SET_CAPACITY - 10});
ANALYZE;
"""


@dataclasses.dataclass
class Served:
    groups: groups_pb2_grpc.GroupsServiceStub
    lifecycle: lifecycle_pb2_grpc.GroupLifecycleServiceStub
    statements: list[tuple[str, Any]]


@pytest.fixture
async def served(pg_url: str, rules: Rules) -> AsyncIterator[Served]:
    await migrate("groups", pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(SEED)
    finally:
        await conn.close()
    app = GroupsApp(settings_for("groups", pg_url), rules, ManualClock(NOW))
    statements: list[tuple[str, Any]] = []

    @event.listens_for(app.db.engine.sync_engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        statements.append((statement, parameters))

    server = Server(app, serve_metrics_http=False)
    port = await server.start()
    channel = internal_channel(f"127.0.0.1:{port}", INTERNAL_TOKEN)
    try:
        yield Served(
            groups_pb2_grpc.GroupsServiceStub(channel),
            lifecycle_pb2_grpc.GroupLifecycleServiceStub(channel),
            statements,
        )
    finally:
        await channel.close()
        await server.stop()


async def join_and_recommend(served: Served, store_id: str, group_set_id: str, consumer: str) -> list[tuple[str, Any]]:
    served.statements.clear()
    checked = await served.groups.CheckJoin(
        groups_pb2.CheckJoinRequest(group_set_id=group_set_id, consumer_id=consumer)
    )
    assert checked.verdict.allowed, checked.verdict
    await served.groups.AddMember(
        groups_pb2.AddMemberRequest(
            group_set_id=group_set_id, consumer_id=consumer, threshold_version=checked.group_set.threshold_version
        )
    )
    await served.lifecycle.ListCandidates(
        lifecycle_pb2.ListCandidatesRequest(store_id=store_id, consumer_id=consumer + "x")
    )
    return list(served.statements)


def shape(statements: list[tuple[str, Any]]) -> list[str]:
    return [s.split()[0].upper() + " " + ("memberships" if "memberships" in s else "") for s, _ in statements]


async def test_a_500000_member_store_joins_like_a_50_member_store(served: Served, pg_url: str) -> None:
    created = await served.groups.CreateGroupSet(
        groups_pb2.CreateGroupSetRequest(
            kind=common_pb2.GROUP_KIND_STORE,
            name="小群",
            owner_account_id="m-small",
            store_id="small",
            is_public=True,
            threshold=common_pb2.Threshold(follow=common_pb2.FollowThreshold()),
        )
    )
    small = created.group_set.group_set_id
    for i in range(50):
        await served.groups.AddMember(
            groups_pb2.AddMemberRequest(group_set_id=small, consumer_id=f"s{i}", threshold_version=1)
        )
    small_statements = await join_and_recommend(served, "small", small, "newcomer-small")
    big_statements = await join_and_recommend(served, "big", "gs_big1", "newcomer-big")
    assert shape(big_statements) == shape(small_statements)

    conn = await asyncpg.connect(pg_url)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM memberships WHERE group_set_id LIKE 'gs_big%'")
            == BIG_SETS * SET_CAPACITY - 10 + 1
        )
        for statement, parameters in big_statements:
            if "memberships" not in statement or not statement.lstrip().upper().startswith("SELECT"):
                continue
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + statement, *(parameters or ())))
            assert "Seq Scan on memberships" not in plan, (statement, plan)
    finally:
        await conn.close()
