"""Members leaving and being removed (R5, C15), under the same locks as a join; memberships and removals read."""

from __future__ import annotations

from sqlalchemy import select

from services.common.errors import NotFound, PermissionDenied
from services.common.ids import ordered_id
from services.common.request_ids import check_same_request, request_fingerprint
from services.groups import rules as domain
from services.groups.models import Admin, GroupSet, Membership, Removal, SubGroup
from services.groups.records import MembershipRecord, RemovalRecord, membership_record, removal_record
from services.groups.repository import GroupsUnit, its_set
from services.groups.rules import GroupKind, RemovalCause


class Members(GroupsUnit):
    """Leaves, removals and the reads of memberships and removals."""

    async def list_memberships(
        self, consumer_id: str, after: str | None, limit: int
    ) -> tuple[list[MembershipRecord], str | None]:
        query = (
            select(Membership, SubGroup.name)
            .join(SubGroup, (SubGroup.owner_key == Membership.owner_key) & (SubGroup.id == Membership.sub_group_id))
            .where(Membership.consumer_id == consumer_id)
        )
        if after is not None:
            query = query.where(Membership.group_set_id > after)
        rows = list(await self.session.execute(query.order_by(Membership.group_set_id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        records = [membership_record(m, name) for m, name in rows]
        return records, (records[-1].group_set_id if more and records else None)

    async def remove_member(self, group_set_id: str, consumer_id: str) -> GroupKind:
        """A leave frees room in the sub-group, the set and the account."""
        key = await self._owner_key_of(group_set_id)
        owner = await self._lock_owner(key)
        row = await self._lock_set(key, group_set_id)
        if not await self._free_seat(owner, row, consumer_id):
            raise NotFound("membership", f"{group_set_id}/{consumer_id}")
        return GroupKind(row.kind)

    async def expel(
        self,
        group_set_id: str,
        consumer_id: str,
        cause: RemovalCause,
        *,
        reason: str = "",
        barred: bool = False,
        request_id: str = "",
        missing_ok: bool = False,
    ) -> tuple[RemovalRecord | None, bool]:
        """Removes a member on someone else's decision (R5, C15), audited (X4) and kept for the member to read.

        Under the owner's and the set's locks, like a leave. Returns the removal
        and whether it is the replay of an earlier call with ``request_id`` (whose
        scope is the group-set and the consumer); a
        consumer who is not a member is NOT_FOUND, or ``(None, False)`` with
        ``missing_ok`` (a store blacklist sweeping the store's groups).
        """
        key = await self._owner_key_of(group_set_id)
        owner = await self._lock_owner(key)
        row = await self._lock_set(key, group_set_id)
        fingerprint = request_fingerprint(cause=cause, reason=reason, barred=barred)
        if request_id:
            earlier = await self.session.scalar(
                select(Removal).where(
                    Removal.owner_key == key,
                    Removal.group_set_id == row.id,
                    Removal.consumer_id == consumer_id,
                    Removal.request_id == request_id,
                )
            )
            if earlier is not None:
                check_same_request(request_id, earlier.request_fingerprint, fingerprint, "removal")
                return removal_record(earlier, row), True
        is_admin = await self.session.get(Admin, (key, row.id, consumer_id)) is not None
        refusal = domain.removal_refusal(
            cause, target_is_owner=consumer_id == row.owner_account_id, target_is_admin=is_admin
        )
        if refusal is not None:
            raise PermissionDenied(refusal, rule_id="R5", reason="MEMBER_NOT_REMOVABLE")
        if not await self._free_seat(owner, row, consumer_id):
            if missing_ok:
                return None, False
            raise NotFound("membership", f"{group_set_id}/{consumer_id}")
        removal = Removal(
            owner_key=key,
            id=ordered_id(self.now),
            consumer_id=consumer_id,
            group_set_id=row.id,
            cause=str(cause),
            reason=reason,
            barred=barred,
            actor=self.actor,
            request_id=request_id or None,
            request_fingerprint=fingerprint if request_id else None,
            removed_at=self.now,
        )
        self.session.add(removal)
        action = "sleeping.remove" if cause is RemovalCause.SLEEPING else "member.remove"
        self.audit(key, action, row.id, consumer_id, domain.describe_removal(cause, reason, barred))
        await self.session.flush()
        return removal_record(removal, row), False

    async def store_sets_of_member(self, store_id: str, consumer_id: str) -> list[str]:
        """The store's group-sets (store groups and its live groups) the consumer is in now."""
        return list(
            await self.session.scalars(
                select(Membership.group_set_id)
                .join(GroupSet, its_set(Membership))
                .where(
                    Membership.consumer_id == consumer_id,
                    GroupSet.store_id == store_id,
                    GroupSet.dissolved_at.is_(None),
                )
                .order_by(Membership.group_set_id)
            )
        )

    async def list_removals(
        self, consumer_id: str, before: int | None, limit: int
    ) -> tuple[list[RemovalRecord], int | None]:
        """The consumer's removals, newest first (R5: the removed member reads why)."""
        query = select(Removal, GroupSet).join(GroupSet, its_set(Removal)).where(Removal.consumer_id == consumer_id)
        if before is not None:
            query = query.where(Removal.id < before)
        rows = list(await self.session.execute(query.order_by(Removal.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = rows[-1][0].id if more and rows else None
        return [removal_record(removal, group_set) for removal, group_set in rows], cursor
