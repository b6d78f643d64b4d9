"""What the gateway's official modules (V1–V5a), the audit trail (X4) and member listings read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from services.groups import rules as domain
from services.groups.models import AuditEntry, CapacityOwner, GroupSet, Membership
from services.groups.records import GroupSetRecord, set_fill
from services.groups.repository import GroupsUnit, its_set
from services.groups.rules import GroupKind
from services.groups.set_owners import owner_of


@dataclass(frozen=True)
class Candidates:
    sets: tuple[tuple[GroupSetRecord, bool], ...]  # (set, full)
    consumer_in_store_group: bool
    first_group_created_at: datetime | None


class Reads(GroupsUnit):
    """Reads across a store's group-sets, for discovery and the audit trail."""

    # -- audit (X4) --------------------------------------------------------------------------

    async def audit_entries(
        self, owner_key: str, after_id: int | None, limit: int
    ) -> tuple[list[AuditEntry], int | None]:
        query = select(AuditEntry).where(AuditEntry.owner_key == owner_key)
        if after_id is not None:
            query = query.where(AuditEntry.id > after_id)
        rows = list(await self.session.scalars(query.order_by(AuditEntry.id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].id if more and rows else None)

    # -- official modules (V) ----------------------------------------------------------------

    async def candidates(self, store_id: str, consumer_id: str) -> Candidates:
        sets = list(
            await self.session.scalars(
                select(GroupSet)
                .where(
                    GroupSet.owner_key == domain.owner_key(GroupKind.STORE, store_id, ""),
                    GroupSet.dissolved_at.is_(None),
                    GroupSet.is_public.is_(True),
                )
                .order_by(GroupSet.created_at, GroupSet.id)
            )
        )
        records = await self._records(sets)
        owner = await self.session.get(CapacityOwner, domain.owner_key(GroupKind.STORE, store_id, ""))
        account = await self._account_fill(GroupKind.STORE, owner, store_id)
        with_fill = tuple(
            (record, bool(domain.capacity_failures(self.rules, set_fill(record), account))) for record in records
        )
        in_store = await self.session.scalar(
            select(Membership.group_set_id)
            .join(GroupSet, its_set(Membership))
            .where(Membership.consumer_id == consumer_id, GroupSet.store_id == store_id)
            .limit(1)
        )
        first = await self.session.scalar(
            select(func.min(GroupSet.created_at)).where(
                GroupSet.owner_key == domain.owner_key(GroupKind.STORE, store_id, "")
            )
        )
        return Candidates(with_fill, in_store is not None, first)

    async def member_ids(self, group_set_id: str, after: str | None, limit: int) -> tuple[list[str], str | None]:
        key = await owner_of(self.session, group_set_id)
        if key is None:
            return [], None
        query = select(Membership.consumer_id).where(
            Membership.owner_key == key, Membership.group_set_id == group_set_id
        )
        if after is not None:
            query = query.where(Membership.consumer_id > after)
        ids = list(await self.session.scalars(query.order_by(Membership.consumer_id).limit(limit + 1)))
        more = len(ids) > limit
        ids = ids[:limit]
        return ids, (ids[-1] if more and ids else None)
