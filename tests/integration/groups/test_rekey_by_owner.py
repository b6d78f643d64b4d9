"""Groups' migration 0006 (ADR 0014) carries a database's rows over to the keys led by their owner.

Rows written under 0005's keys (``store:<id>``, ``streamer:<id>``, tables keyed by the set's id) are read
back after the upgrade with the new owner keys on every table, each set's owner in ``group_set_owners``,
and the audit trail's and removals' ids kept; then the service goes on with them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import text

from services.common.db import create_engine
from services.common.ids import ordered_id
from services.common.migrations import upgrade
from services.common.settings import async_url, database_url

AT = "2026-11-01 10:00:00+00:00"
OLD_ROWS = [
    "INSERT INTO capacity_owners (owner_key, kind, member_count, group_set_count, extra_members) VALUES "
    "('store:s1', 'store', 1, 1, 0), ('streamer:h1', 'live', 0, 1, 0)",
    "INSERT INTO group_sets (id, owner_key, kind, name, owner_account_id, store_id, streamer_id, threshold_kind, "
    "threshold_params, password_digest, threshold_version, is_public, announcement, newcomer_reply, member_count, "
    "sub_group_count, request_id, created_at, dissolved_at) VALUES "
    f"('gs_a', 'store:s1', 'store', 'A', 'm1', 's1', NULL, 'follow', '{{}}', '', 1, true, '', '', 1, 1, NULL, '{AT}', "
    "NULL), "
    f"('gs_b', 'streamer:h1', 'live', 'B', 'h1', NULL, 'h1', 'fan_level', '{{}}', '', 1, true, '', '', 0, 1, NULL, "
    f"'{AT}', NULL)",
    f"INSERT INTO sub_groups (id, group_set_id, seq, name, member_count, created_at) VALUES "
    f"('sg_a1', 'gs_a', 1, 'A1', 1, '{AT}'), ('sg_b1', 'gs_b', 1, 'B1', 0, '{AT}')",
    "INSERT INTO memberships (group_set_id, consumer_id, sub_group_id, request_id, newcomer_reply, messages_hidden, "
    f"joined_at) VALUES ('gs_a', 'c1', 'sg_a1', 'r1', 'hi', false, '{AT}')",
    f"INSERT INTO first_joins (group_set_id, consumer_id, first_joined_at) VALUES ('gs_a', 'c1', '{AT}')",
    "INSERT INTO join_requests (group_set_id, consumer_id, request_id, sub_group_id, sub_group_name, newcomer_reply, "
    f"joined_at) VALUES ('gs_a', 'c1', 'r1', 'sg_a1', 'A1', 'hi', '{AT}')",
    f"INSERT INTO admins (group_set_id, account_id, added_at) VALUES ('gs_b', 'a1', '{AT}')",
    "INSERT INTO removals (consumer_id, group_set_id, cause, reason, barred, actor, request_id, removed_at) VALUES "
    f"('c2', 'gs_a', 'owner', 'spam', false, 'm1', NULL, '{AT}')",
    "INSERT INTO audit_entries (owner_key, at, actor, action, target, old_value, new_value) VALUES "
    f"('store:s1', '{AT}', 'm1', 'group_set.create', 'gs_a', '', 'A'), "
    f"('streamer:h1', '{AT}', 'h1', 'group_set.create', 'gs_b', '', 'B')",
]


async def _run(url: str, statements: list[str]) -> list[list[tuple[object, ...]]]:
    """Runs ``statements`` in one transaction; the rows of each (none for a write)."""
    engine = create_engine(async_url(url), pool_size=1)
    try:
        async with engine.begin() as connection:
            found = []
            for sql in statements:
                result = await connection.execute(text(sql))
                found.append([tuple(row) for row in result.all()] if result.returns_rows else [])
            return found
    finally:
        await engine.dispose()


async def test_old_rows_are_carried_over_to_keys_led_by_their_owner(db_url: str) -> None:
    url = database_url({"QUN_DATABASE_URL": db_url}, "groups")
    await asyncio.to_thread(upgrade, "groups", url, "0005")
    await _run(db_url, OLD_ROWS)
    await asyncio.to_thread(upgrade, "groups", url)
    owners, sets, set_owners, subs, members, firsts, requests, admins, removals, audit = await _run(
        db_url,
        [
            "SELECT owner_key, kind FROM capacity_owners ORDER BY owner_key",
            "SELECT owner_key, id FROM group_sets ORDER BY id",
            "SELECT group_set_id, owner_key FROM group_set_owners ORDER BY group_set_id",
            "SELECT owner_key, id, group_set_id FROM sub_groups ORDER BY id",
            "SELECT owner_key, group_set_id, consumer_id, sub_group_id FROM memberships",
            "SELECT owner_key, group_set_id, consumer_id FROM first_joins",
            "SELECT owner_key, group_set_id, request_id FROM join_requests",
            "SELECT owner_key, group_set_id, account_id FROM admins",
            "SELECT owner_key, id, group_set_id, consumer_id FROM removals",
            "SELECT owner_key, id, target FROM audit_entries ORDER BY id",
        ],
    )
    assert owners == [("s1", "store"), ("streamer/h1", "live")]
    assert sets == [("s1", "gs_a"), ("streamer/h1", "gs_b")]
    assert set_owners == [("gs_a", "s1"), ("gs_b", "streamer/h1")]
    assert subs == [("s1", "sg_a1", "gs_a"), ("streamer/h1", "sg_b1", "gs_b")]
    assert members == [("s1", "gs_a", "c1", "sg_a1")]
    assert firsts == [("s1", "gs_a", "c1")]
    assert requests == [("s1", "gs_a", "r1")]
    assert admins == [("streamer/h1", "gs_b", "a1")]
    assert removals == [("s1", 1, "gs_a", "c2")]
    assert audit == [("s1", 1, "gs_a"), ("streamer/h1", 2, "gs_b")]
    # New rows are numbered after the copied ones, and keyed by their owner like them.
    later = ordered_id(datetime.now(UTC))
    assert later > 2
    await _run(
        db_url,
        [
            "INSERT INTO audit_entries (owner_key, id, at, actor, action, target, old_value, new_value) VALUES "
            f"('s1', {later}, '{AT}', 'm1', 'admin.add', 'gs_a', '', 'a2')"
        ],
    )
    (trail,) = await _run(db_url, ["SELECT action FROM audit_entries WHERE owner_key = 's1' ORDER BY id"])
    assert trail == [("group_set.create",), ("admin.add",)]
