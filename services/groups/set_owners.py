"""Which owner a group-set belongs to, by the set's id alone: the first read of every call that names only a set.

Every groups statement names the set's owner, so a sharded database runs it
on the owner's node (ADR 0014); the owner comes from ``group_set_owners``, a
reference table every node holds. A set never changes owner, so each
process keeps the answers it read (at most ``KEPT`` sets, the least recently
asked forgotten first), and a hot set's calls cost no extra round trip. Set
ids are random (``services.common.ids.new_id``), so a kept answer never
names another set's owner.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import Statements
from services.common.schema import table_of
from services.common.sqlite_driver import on_driver
from services.groups.models import GroupSetOwner

KEPT = 100_000

set_owners = table_of(GroupSetOwner)
SET_OWNER = on_driver(select(set_owners.c.owner_key).where(set_owners.c.group_set_id == bindparam("set_id")))

_known: OrderedDict[str, str] = OrderedDict()


async def owner_of(connection: Statements | AsyncSession, group_set_id: str) -> str | None:
    """The set's owner key; None when there is no such set."""
    key = _known.get(group_set_id)
    if key is not None:
        _known.move_to_end(group_set_id)
        return key
    found = await connection.scalar(SET_OWNER, {"set_id": group_set_id})
    if found is not None:
        _known[group_set_id] = key = str(found)
        while len(_known) > KEPT:
            _known.popitem(last=False)
    return key
