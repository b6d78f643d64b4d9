"""Group-sets: creation under the owner's lock (T2, T4, T5), settings (R3, C11), dissolution, admins (R2)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import grpc
from sqlalchemy import delete, func, select, update

from services.common.errors import InvalidArgument, NotFound, RuleRefusal
from services.common.ids import new_id
from services.common.keysets import keyset_page
from services.common.request_ids import check_same_request, request_fingerprint
from services.groups import rules as domain
from services.groups.models import Admin, GroupSet, GroupSetOwner, Membership, SubGroup
from services.groups.records import (
    CreateResult,
    GroupSetRecord,
    NewGroupSet,
    SettingsChange,
    describe_threshold,
    threshold_from_row,
    threshold_params,
)
from services.groups.repository import GroupsUnit
from services.groups.rules import GroupKind
from services.groups.set_owners import owner_of


def create_fingerprint(new: NewGroupSet) -> str:
    """What makes two CreateGroupSet requests the same: every field but the id and the password.

    The password's digest is salted anew on every call, and the password itself is never kept, not
    even inside a digest of the request.
    """
    return request_fingerprint(group_set=dataclasses.replace(new, request_id="", password_digest=""))


class GroupSets(GroupsUnit):
    """Group-sets, their settings and admins."""

    async def group_set(self, group_set_id: str) -> GroupSetRecord:
        row = await self._set_row(group_set_id)
        if row is None or row.dissolved_at is not None:
            raise NotFound("group_set", group_set_id)
        return (await self._records([row]))[0]

    async def list_group_sets(
        self, key: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[GroupSetRecord], tuple[datetime, str] | None]:
        query = select(GroupSet).where(GroupSet.owner_key == key, GroupSet.dissolved_at.is_(None))
        rows, cursor = await keyset_page(self.session, query, GroupSet.created_at, GroupSet.id, after, limit)
        return await self._records(rows), cursor

    async def create_group_set(self, new: NewGroupSet) -> CreateResult:
        """T2/T4 group-set cap under the owner's lock; the first sub-group "<name>1" (T5).

        A request id is the owner's: the same request answers the set it created (``created`` false).
        """
        fingerprint = create_fingerprint(new)
        key = domain.owner_key(new.kind, new.store_id, new.streamer_id)
        if new.request_id:
            earlier = await self._created_by_request(key, new, fingerprint)
            if earlier is not None:
                return CreateResult(earlier, created=False)
        await self._ensure_owner(key, new.kind)
        owner = await self._lock_owner(key)
        if new.request_id:  # a concurrent replay may have committed while we waited for the lock
            earlier = await self._created_by_request(key, new, fingerprint)
            if earlier is not None:
                return CreateResult(earlier, created=False)
        account = await self._account_fill(new.kind, owner, new.store_id)
        failures = domain.create_failures(self.rules, account)
        if failures:
            raise RuleRefusal(failures, code=grpc.StatusCode.RESOURCE_EXHAUSTED)
        row = GroupSet(
            id=new_id("gs"),
            owner_key=key,
            kind=str(new.kind),
            name=new.name,
            owner_account_id=new.owner_account_id,
            store_id=new.store_id or None,
            streamer_id=new.streamer_id or None,
            threshold_kind=str(new.threshold.kind),
            threshold_params=threshold_params(new.threshold),
            password_digest=new.password_digest,
            threshold_version=1,
            is_public=new.is_public,
            announcement=new.announcement,
            newcomer_reply=new.newcomer_reply,
            member_count=0,
            sub_group_count=1,
            request_id=new.request_id or None,
            request_fingerprint=fingerprint if new.request_id else None,
            created_at=self.now,
            dissolved_at=None,
        )
        self.session.add(row)
        self.session.add(GroupSetOwner(group_set_id=row.id, owner_key=key))
        self.audit(key, "group_set.create", row.id, "", f"{new.kind} {new.name!r} {describe_threshold(new.threshold)}")
        await self.session.flush()
        self.session.add(self._new_sub_group(row, 1))
        for account_id in new.admin_ids:
            self.session.add(Admin(owner_key=key, group_set_id=row.id, account_id=account_id, added_at=self.now))
            self.audit(row.owner_key, "admin.add", row.id, "", account_id)
        owner.group_set_count += 1
        await self.session.flush()
        return CreateResult((await self._records([row]))[0], created=True)

    async def _created_by_request(self, key: str, new: NewGroupSet, fingerprint: str) -> GroupSetRecord | None:
        """The set an earlier call with this request id created; RequestIdReused when it asked for another."""
        row = await self.session.scalar(
            select(GroupSet).where(
                GroupSet.owner_key == key,
                GroupSet.owner_account_id == new.owner_account_id,
                GroupSet.request_id == new.request_id,
            )
        )
        if row is None:
            return None
        check_same_request(new.request_id, row.request_fingerprint, fingerprint, "group-set")
        return (await self._records([row]))[0]

    async def dissolve(self, group_set_id: str) -> GroupKind | None:
        """Marks the set dissolved, removes its memberships and frees the account's counts.

        Returns the kind, or None when it was already dissolved (a retry changes nothing).
        """
        key = await self._owner_key_of(group_set_id)
        owner = await self._lock_owner(key)
        row = await self._lock_set(key, group_set_id, include_dissolved=True)
        if row.dissolved_at is not None:
            return None
        await self.session.execute(
            delete(Membership).where(Membership.owner_key == key, Membership.group_set_id == row.id)
        )
        await self.session.execute(
            update(SubGroup).where(SubGroup.owner_key == key, SubGroup.group_set_id == row.id).values(member_count=0)
        )
        owner.member_count -= row.member_count
        owner.group_set_count -= 1
        self.audit(key, "group_set.dissolve", row.id, f"{row.member_count} members", "dissolved")
        row.member_count = 0
        row.dissolved_at = self.now
        await self.session.flush()
        return GroupKind(row.kind)

    async def update_settings(self, group_id: str, change: SettingsChange) -> GroupSetRecord:
        """R3: only on a group-set; C11: a new threshold bumps the version, members stay."""
        key = await owner_of(self.session, group_id)
        row = None if key is None else await self._lock_set(key, group_id, include_dissolved=True)
        if row is None:
            # Off the hot path: a sub-group's id is looked for on every node.
            sub = await self.session.scalar(select(SubGroup).where(SubGroup.id == group_id))
            if sub is not None:
                raise RuleRefusal(domain.settings_target_failures(sub.group_set_id))
            raise NotFound("group_set", group_id)
        if row.dissolved_at is not None:
            raise NotFound("group_set", group_id)
        kind = GroupKind(row.kind)
        if change.threshold is not None:
            mismatch = domain.threshold_kind_failures(kind, change.threshold.kind)
            if mismatch:
                raise InvalidArgument.one("threshold", mismatch[0].message)
            old = describe_threshold(threshold_from_row(row.threshold_kind, row.threshold_params))
            self.audit(row.owner_key, "threshold", row.id, old, describe_threshold(change.threshold))
            row.threshold_kind = str(change.threshold.kind)
            row.threshold_params = threshold_params(change.threshold)
            row.password_digest = change.password_digest
            row.threshold_version += 1
        for field in ("announcement", "newcomer_reply", "is_public", "name"):
            value = getattr(change, field)
            if value is not None and value != getattr(row, field):
                self.audit(row.owner_key, f"setting.{field}", row.id, str(getattr(row, field)), str(value))
        if change.name is not None and change.name != row.name:
            row.name = change.name  # T5: the sub-groups keep being named after their set
            for sub in await self._sub_group_rows(row):
                sub.name = domain.sub_group_name(change.name, sub.seq)
        if change.announcement is not None:
            row.announcement = change.announcement
        if change.newcomer_reply is not None:
            row.newcomer_reply = change.newcomer_reply
        if change.is_public is not None:
            row.is_public = change.is_public
        await self.session.flush()
        return (await self._records([row]))[0]

    # -- admins (R2) -------------------------------------------------------------------------

    async def add_admin(self, group_set_id: str, account_id: str) -> GroupSetRecord:
        key = await self._owner_key_of(group_set_id)
        row = await self._lock_set(key, group_set_id)
        if account_id == row.owner_account_id:
            raise InvalidArgument.one("account_id", "the owner cannot be an admin of their own group-set")
        if await self.session.get(Admin, (key, row.id, account_id)) is None:
            count = (
                await self.session.scalar(
                    select(func.count()).where(Admin.owner_key == key, Admin.group_set_id == row.id)
                )
                or 0
            )
            failures = domain.admin_limit_failures(self.rules, int(count))
            if failures:
                raise RuleRefusal(failures)
            self.session.add(Admin(owner_key=key, group_set_id=row.id, account_id=account_id, added_at=self.now))
            self.audit(row.owner_key, "admin.add", row.id, "", account_id)
            await self.session.flush()
        return (await self._records([row]))[0]

    async def remove_admin(self, group_set_id: str, account_id: str) -> GroupSetRecord:
        key = await self._owner_key_of(group_set_id)
        row = await self._lock_set(key, group_set_id)
        admin = await self.session.get(Admin, (key, row.id, account_id))
        if admin is None:
            raise NotFound("admin", f"{group_set_id}/{account_id}")
        await self.session.delete(admin)
        self.audit(row.owner_key, "admin.remove", row.id, account_id, "")
        await self.session.flush()
        return (await self._records([row]))[0]
