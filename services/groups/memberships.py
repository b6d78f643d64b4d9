"""GetMembership's read: one prebuilt statement on a read-only transaction.

The gateway asks it before every flash-sale purchase (M5) and every end-card
read by a consumer, so it skips the ORM session (docs/adr/0006-hot-paths-off-the-orm.md).
"""

from __future__ import annotations

from sqlalchemy import bindparam, select

from services.common.db import Statements
from services.common.errors import NotFound
from services.common.schema import table_of
from services.common.sqlite_driver import on_driver
from services.groups.models import Membership, SubGroup
from services.groups.records import MembershipRecord
from services.groups.set_owners import owner_of

memberships = table_of(Membership)
sub_groups = table_of(SubGroup)

# The columns in MembershipRecord's order, by ``owner``, ``set_id`` and ``consumer``. On SQLite it runs on the
# driver (``sqlite_driver``); the join path reads a member's place with it too.
MEMBERSHIP = on_driver(
    select(
        memberships.c.group_set_id,
        memberships.c.sub_group_id,
        sub_groups.c.name,
        memberships.c.consumer_id,
        memberships.c.joined_at,
        memberships.c.notified_at,
    )
    .join(
        sub_groups,
        (sub_groups.c.owner_key == memberships.c.owner_key) & (sub_groups.c.id == memberships.c.sub_group_id),
    )
    .where(
        memberships.c.owner_key == bindparam("owner"),
        memberships.c.group_set_id == bindparam("set_id"),
        memberships.c.consumer_id == bindparam("consumer"),
    )
)


async def membership(statements: Statements, group_set_id: str, consumer_id: str) -> MembershipRecord:
    """The consumer's place in the group-set; NOT_FOUND when they are in none of its sub-groups."""
    owner = await owner_of(statements, group_set_id)
    params = {"owner": owner, "set_id": group_set_id, "consumer": consumer_id}
    row = None if owner is None else (await statements.execute(MEMBERSHIP, params)).first()
    if row is None:
        raise NotFound("membership", f"{group_set_id}/{consumer_id}")
    return MembershipRecord(*row)
