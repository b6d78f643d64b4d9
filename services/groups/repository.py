"""The groups service's unit of work: one transaction, the locks every change takes, the audit trail.

Persistence is split by aggregate, each a ``GroupsUnit`` over the caller's
session: ``group_sets`` (group-sets, settings, levels, admins), ``members``
(leaves, removals, memberships), ``lifecycle_repository`` (the jobs, capacity,
sleeping customers, audit reads); the join path is ``joins`` (prebuilt Core
statements). Every method runs inside the caller's transaction (one per RPC). The caps of
SPEC T6 hold with any number of replicas on one PostgreSQL because every
change of a count takes row locks in one fixed order and decides from the
locked values:

1. the capacity-owner row of the store or streamer (``SELECT … FOR UPDATE``),
   which serialises everything that changes the account's member or
   group-set counts (T2, T4);
2. the group-set row (``SELECT … FOR UPDATE``), which serialises the set's
   member count, its sub-groups' counts and the creation of the next
   sub-group (T1, T4, T5), and its admins (R2) and settings (C11).

The same order everywhere means no deadlocks. On SQLite the engine already
runs one writer at a time (``BEGIN IMMEDIATE``), and ``FOR UPDATE`` is not
rendered. The memberships primary key (owner, group-set, consumer) is the
last guard for C13. Every statement names the set's owner, found first by the
set's id in ``group_set_owners`` (ADR 0014). A join reads only the set's sub-groups (at most
``sub_groups_per_set`` rows) and the locked counters; it never counts a
store's members.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import ColumnElement, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import NotFound
from services.common.ids import new_id, ordered_id
from services.common.inserts import dialect_insert
from services.common.rules import Rules
from services.groups import rules as domain
from services.groups.models import (
    Admin,
    AuditEntry,
    CapacityOwner,
    GroupLevel,
    GroupSet,
    Membership,
    Removal,
    SubGroup,
)
from services.groups.records import GroupSetRecord, SubGroupRecord, group_set_record, month_of
from services.groups.rules import GroupKind
from services.groups.set_owners import owner_of

SYSTEM_ACTOR = "system"


def its_set(model: type[Membership] | type[Removal]) -> ColumnElement[bool]:
    """The join of a set's row (a membership, a removal) to its set: by the owner and the set, one node's rows."""
    return (GroupSet.owner_key == model.owner_key) & (GroupSet.id == model.group_set_id)


U = TypeVar("U", bound="GroupsUnit")


class GroupsUnit:
    """One transaction of the groups service, acting for one actor (the audit trail's)."""

    def __init__(self, session: AsyncSession, rules: Rules, now: datetime, actor: str = SYSTEM_ACTOR) -> None:
        self.session = session
        self.rules = rules
        self.now = now
        self.actor = actor or SYSTEM_ACTOR

    def along(self, unit: type[U]) -> U:
        """Another aggregate's unit of work in this same transaction, for the same actor."""
        return unit(self.session, self.rules, self.now, self.actor)

    def audit(self, owner_key: str, action: str, target: str, old: str = "", new: str = "") -> None:
        """X4: one audit entry, written in the transaction that makes the change."""
        self.session.add(
            AuditEntry(
                owner_key=owner_key,
                id=ordered_id(self.now),
                at=self.now,
                actor=self.actor,
                action=action,
                target=target,
                old_value=old,
                new_value=new,
            )
        )

    async def store_level(self, store_id: str) -> int:
        """T2: the level recorded for this month, else the latest earlier month, else L0."""
        level = await self.session.scalar(
            select(GroupLevel.level)
            .where(GroupLevel.store_id == store_id, GroupLevel.month <= month_of(self.now))
            .order_by(GroupLevel.month.desc())
            .limit(1)
        )
        return int(level) if level is not None else 0

    async def set_group_level(self, store_id: str, month: str, level: int, action: str = "level") -> int | None:
        """Records the level that holds in ``month`` (T8), audited old → new (X4); returns the old one, if any."""
        old = await self.session.get(GroupLevel, (store_id, month), populate_existing=True)
        previous = None if old is None else old.level
        self.audit(
            domain.owner_key(GroupKind.STORE, store_id, ""),
            action,
            month,
            "" if previous is None else f"L{previous}",
            f"L{level}",
        )
        values = {"store_id": store_id, "month": month, "level": level, "updated_at": self.now}
        stmt = dialect_insert(self.session.get_bind().dialect, GroupLevel).values(**values)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[GroupLevel.store_id, GroupLevel.month],
                set_={"level": stmt.excluded.level, "updated_at": stmt.excluded.updated_at},
            )
        )
        return previous

    async def _free_seat(self, owner: CapacityOwner, row: GroupSet, consumer_id: str) -> bool:
        """Deletes the membership and frees its seat in the sub-group, the set and the account (both locked).

        False when the consumer is not a member.
        """
        membership = await self.session.get(Membership, (row.owner_key, row.id, consumer_id), populate_existing=True)
        if membership is None:
            return False
        sub = await self.session.get(SubGroup, (row.owner_key, membership.sub_group_id), populate_existing=True)
        assert sub is not None
        await self.session.delete(membership)
        sub.member_count -= 1
        row.member_count -= 1
        owner.member_count -= 1
        await self.session.flush()
        return True

    # -- locks and shared reads ----------------------------------------------------------------

    async def _owner_key_of(self, group_set_id: str) -> str:
        """The set's capacity owner, from the reference table every node holds; it never changes."""
        found = await owner_of(self.session, group_set_id)
        if found is None:
            raise NotFound("group_set", group_set_id)
        return found

    async def _set_row(self, group_set_id: str) -> GroupSet | None:
        """The set by its id alone, without a lock; None when there is no such set."""
        found = await owner_of(self.session, group_set_id)
        return None if found is None else await self.session.get(GroupSet, (found, group_set_id))

    async def _ensure_owner(self, key: str, kind: GroupKind) -> None:
        await self.session.execute(
            dialect_insert(self.session.get_bind().dialect, CapacityOwner)
            .values(owner_key=key, kind=str(kind), member_count=0, group_set_count=0)
            .on_conflict_do_nothing(index_elements=[CapacityOwner.owner_key])
        )

    async def _lock_owner(self, key: str) -> CapacityOwner:
        owner = await self.session.scalar(
            select(CapacityOwner)
            .where(CapacityOwner.owner_key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if owner is None:  # pragma: no cover - a group-set always has its owner row
            raise NotFound("capacity_owner", key)
        return owner

    async def _lock_set(self, key: str, group_set_id: str, *, include_dissolved: bool = False) -> GroupSet:
        row = await self.session.scalar(
            select(GroupSet)
            .where(GroupSet.owner_key == key, GroupSet.id == group_set_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if row is None or (row.dissolved_at is not None and not include_dissolved):
            raise NotFound("group_set", group_set_id)
        return row

    async def _sub_group_rows(self, row: GroupSet) -> list[SubGroup]:
        return list(
            await self.session.scalars(
                select(SubGroup)
                .where(SubGroup.owner_key == row.owner_key, SubGroup.group_set_id == row.id)
                .order_by(SubGroup.seq)
                .execution_options(populate_existing=True)
            )
        )

    def _new_sub_group(self, row: GroupSet, seq: int) -> SubGroup:
        return SubGroup(
            owner_key=row.owner_key,
            id=new_id("sg"),
            group_set_id=row.id,
            seq=seq,
            name=domain.sub_group_name(row.name, seq),
            member_count=0,
            created_at=self.now,
        )

    async def _account_fill(self, kind: GroupKind, owner: CapacityOwner | None, store_id: str) -> domain.AccountFill:
        level = await self.store_level(store_id) if kind is GroupKind.STORE else 0
        if owner is None:
            return domain.AccountFill(kind, 0, 0, level)
        return domain.AccountFill(kind, owner.member_count, owner.group_set_count, level, owner.extra_members)

    async def _records(self, rows: Sequence[GroupSet]) -> list[GroupSetRecord]:
        """Group-sets with their sub-groups and admins, two queries for any number of sets."""
        ids = [r.id for r in rows]
        keys = [(r.owner_key, r.id) for r in rows]
        subs: dict[str, list[SubGroupRecord]] = {i: [] for i in ids}
        admins: dict[str, list[str]] = {i: [] for i in ids}
        if ids:
            for sub in await self.session.scalars(
                select(SubGroup)
                .where(tuple_(SubGroup.owner_key, SubGroup.group_set_id).in_(keys))
                .order_by(SubGroup.group_set_id, SubGroup.seq)
                .execution_options(populate_existing=True)
            ):
                subs[sub.group_set_id].append(SubGroupRecord(sub.id, sub.seq, sub.name, sub.member_count))
            for admin in await self.session.scalars(
                select(Admin)
                .where(tuple_(Admin.owner_key, Admin.group_set_id).in_(keys))
                .order_by(Admin.group_set_id, Admin.added_at)
            ):
                admins[admin.group_set_id].append(admin.account_id)
        return [group_set_record(r, subs[r.id], admins[r.id]) for r in rows]
