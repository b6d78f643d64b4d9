"""Seeds a large store straight into the groups database, the way a migration from another system would.

Half a million joins through the API would take longer than the benchmark;
the rows written here are exactly what joins would have written (memberships
spread over full sub-groups, counters that match), so the service cannot
tell the difference.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update

from services.common.db import Database
from services.common.rules import load_rules
from services.common.settings import database_url
from services.groups.models import CapacityOwner, GroupSet, GroupSetOwner, Membership, SubGroup

CHUNK = 20_000


async def _seed(url: str, owner_key: str, group_set_id: str, members: int) -> None:
    """Adds ``members`` memberships: all but a little room in the given set's store, spread over extra sets."""
    rules = load_rules()
    store = rules.store_groups
    db = Database(url, pool_size=1)
    now = datetime.now(UTC)
    try:
        async with db.transaction() as session:
            template = await session.get(GroupSet, (owner_key, group_set_id))
            assert template is not None
            sets_needed = members // store.group_set_capacity
            set_ids = [f"{group_set_id}x{i}" for i in range(sets_needed)]
            for set_id in set_ids:
                session.add(
                    GroupSet(
                        id=set_id,
                        owner_key=owner_key,
                        kind=template.kind,
                        name=f"{template.name}{set_id[-4:]}",
                        owner_account_id=template.owner_account_id,
                        store_id=template.store_id,
                        streamer_id=None,
                        threshold_kind=template.threshold_kind,
                        threshold_params=template.threshold_params,
                        password_digest="",
                        threshold_version=1,
                        is_public=True,
                        announcement="",
                        newcomer_reply="",
                        member_count=store.group_set_capacity,
                        sub_group_count=store.sub_groups_per_set,
                        request_id=None,
                        created_at=now,
                        dissolved_at=None,
                    )
                )
                session.add(GroupSetOwner(group_set_id=set_id, owner_key=owner_key))
            await session.flush()
            for set_id in set_ids:
                for seq in range(1, store.sub_groups_per_set + 1):
                    session.add(
                        SubGroup(
                            owner_key=owner_key,
                            id=f"{set_id}s{seq}",
                            group_set_id=set_id,
                            seq=seq,
                            name=f"s{seq}",
                            member_count=store.sub_group_capacity,
                            created_at=now,
                        )
                    )
            # Enough capacity for the seeded members (as expansion grants would give) plus room to join.
            extra = max(0, members + 10_000 - store.members_allowed(0))
            await session.execute(
                update(CapacityOwner)
                .where(CapacityOwner.owner_key == owner_key)
                .values(
                    member_count=CapacityOwner.member_count + members,
                    group_set_count=CapacityOwner.group_set_count + len(set_ids),
                    extra_members=extra,
                )
            )
        rows = (
            {
                "owner_key": owner_key,
                "group_set_id": set_id,
                "consumer_id": f"seed{i}-{k}",
                "sub_group_id": f"{set_id}s{k // store.sub_group_capacity + 1}",
                "request_id": None,
                "newcomer_reply": "",
                "messages_hidden": False,
                "joined_at": now,
            }
            for i, set_id in enumerate(set_ids)
            for k in range(store.group_set_capacity)
        )
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == CHUNK:
                async with db.transaction() as session:
                    await session.execute(insert(Membership), batch)
                batch = []
        if batch:
            async with db.transaction() as session:
                await session.execute(insert(Membership), batch)
        async with db.transaction() as session:
            count = await session.scalar(select(CapacityOwner.member_count).where(CapacityOwner.owner_key == owner_key))
            assert count is not None and count >= members
    finally:
        await db.close()


def seed_members(env: dict[str, str], owner_key: str, group_set_id: str, members: int) -> None:
    asyncio.run(_seed(database_url(env, "groups"), owner_key, group_set_id, members))
