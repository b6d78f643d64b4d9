"""Persistence of the groups service, one method per unit of work.

Every method runs inside the caller's transaction (one per RPC). The caps of
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
rendered. The memberships primary key (group-set, consumer) is the last
guard for C13. A join reads only the set's sub-groups (at most
``sub_groups_per_set`` rows) and the locked counters; it never counts a
store's members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Failure, InvalidArgument, NotFound, PermissionDenied, RuleRefusal, ServiceError
from services.common.ids import new_id
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
from services.groups.rules import FanLevel, GroupKind, RemovalCause, Threshold, ThresholdKind


@dataclass(frozen=True)
class SubGroupRecord:
    id: str
    seq: int
    name: str
    member_count: int


@dataclass(frozen=True)
class GroupSetRecord:
    id: str
    kind: GroupKind
    name: str
    owner_account_id: str
    store_id: str
    streamer_id: str
    threshold: Threshold
    password_digest: str
    threshold_version: int
    is_public: bool
    announcement: str
    newcomer_reply: str
    member_count: int
    created_at: datetime
    sub_groups: tuple[SubGroupRecord, ...]
    admin_ids: tuple[str, ...]


@dataclass(frozen=True)
class MembershipRecord:
    group_set_id: str
    sub_group_id: str
    sub_group_name: str
    consumer_id: str
    joined_at: datetime
    notified_at: datetime | None = None


@dataclass(frozen=True)
class RemovalRecord:
    """A member removed by someone else, as the member and the remover read it (R5, C15)."""

    group_set_id: str
    group_set_name: str
    store_id: str
    consumer_id: str
    cause: RemovalCause
    reason: str
    barred: bool
    actor_id: str
    removed_at: datetime


@dataclass(frozen=True)
class NewGroupSet:
    """A validated CreateGroupSet request."""

    kind: GroupKind
    name: str
    owner_account_id: str
    store_id: str
    streamer_id: str
    threshold: Threshold
    password_digest: str
    admin_ids: tuple[str, ...]
    is_public: bool
    announcement: str
    newcomer_reply: str
    request_id: str


@dataclass(frozen=True)
class CreateResult:
    group_set: GroupSetRecord
    created: bool


@dataclass(frozen=True)
class JoinResult:
    kind: GroupKind
    membership: MembershipRecord
    newcomer_reply: str
    new_sub_group: bool
    replayed: bool
    # The consumer was a member already: this is their membership, nothing changed.
    already_member: bool = False


@dataclass(frozen=True)
class JoinRefusal:
    """A refused join, returned (not raised) so the caller can count it by kind and rule."""

    kind: GroupKind
    rule_ids: tuple[str, ...]
    error: ServiceError


@dataclass(frozen=True)
class SettingsChange:
    """UpdateSettings fields that were present; None means "leave as is"."""

    name: str | None = None
    announcement: str | None = None
    newcomer_reply: str | None = None
    is_public: bool | None = None
    threshold: Threshold | None = None
    password_digest: str = ""


SYSTEM_ACTOR = "system"


def describe_threshold(threshold: Threshold) -> str:
    """A threshold as the audit trail shows it (never a password)."""
    if threshold.kind is ThresholdKind.SPEND:
        return f"spend>={threshold.min_spend_fen}fen"
    if threshold.kind is ThresholdKind.CROWD:
        return f"crowd:{threshold.crowd_id}"
    if threshold.kind is ThresholdKind.FAN_LEVEL and threshold.min_fan_level is not None:
        return f"fan_level>={threshold.min_fan_level}"
    return str(threshold.kind)


def month_of(now: datetime) -> str:
    return f"{now.year:04d}-{now.month:02d}"


def threshold_params(threshold: Threshold) -> dict[str, Any]:
    if threshold.kind is ThresholdKind.SPEND:
        return {"min_spend_fen": threshold.min_spend_fen}
    if threshold.kind is ThresholdKind.CROWD:
        return {"crowd_id": threshold.crowd_id}
    if threshold.kind is ThresholdKind.FAN_LEVEL and threshold.min_fan_level is not None:
        return {"min_fan_level": str(threshold.min_fan_level)}
    return {}


def threshold_from_row(kind: str, params: dict[str, Any]) -> Threshold:
    level = params.get("min_fan_level")
    return Threshold(
        ThresholdKind(kind),
        min_spend_fen=int(params.get("min_spend_fen", 0)),
        crowd_id=str(params.get("crowd_id", "")),
        min_fan_level=FanLevel(level) if level else None,
    )


class GroupsRepository:
    """The units of work of the groups service over one session (one transaction)."""

    def __init__(self, session: AsyncSession, rules: Rules, now: datetime, actor: str = SYSTEM_ACTOR) -> None:
        self.session = session
        self.rules = rules
        self.now = now
        self.actor = actor or SYSTEM_ACTOR

    def audit(self, owner_key: str, action: str, target: str, old: str = "", new: str = "") -> None:
        """X4: one audit entry, written in the transaction that makes the change."""
        self.session.add(
            AuditEntry(
                owner_key=owner_key,
                at=self.now,
                actor=self.actor,
                action=action,
                target=target,
                old_value=old,
                new_value=new,
            )
        )

    # -- reads -------------------------------------------------------------------------------

    async def store_level(self, store_id: str) -> int:
        """T2: the level recorded for this month, else the latest earlier month, else L0."""
        level = await self.session.scalar(
            select(GroupLevel.level)
            .where(GroupLevel.store_id == store_id, GroupLevel.month <= month_of(self.now))
            .order_by(GroupLevel.month.desc())
            .limit(1)
        )
        return int(level) if level is not None else 0

    async def group_set(self, group_set_id: str) -> GroupSetRecord:
        row = await self.session.get(GroupSet, group_set_id)
        if row is None or row.dissolved_at is not None:
            raise NotFound("group_set", group_set_id)
        return (await self._records([row]))[0]

    async def list_group_sets(
        self, key: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[GroupSetRecord], tuple[datetime, str] | None]:
        query = select(GroupSet).where(GroupSet.owner_key == key, GroupSet.dissolved_at.is_(None))
        if after is not None:
            created, last_id = after
            query = query.where(
                (GroupSet.created_at > created) | ((GroupSet.created_at == created) & (GroupSet.id > last_id))
            )
        rows = list(await self.session.scalars(query.order_by(GroupSet.created_at, GroupSet.id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = (rows[-1].created_at, rows[-1].id) if more and rows else None
        return await self._records(rows), cursor

    async def list_memberships(
        self, consumer_id: str, after: str | None, limit: int
    ) -> tuple[list[MembershipRecord], str | None]:
        query = (
            select(Membership, SubGroup.name)
            .join(SubGroup, SubGroup.id == Membership.sub_group_id)
            .where(Membership.consumer_id == consumer_id)
        )
        if after is not None:
            query = query.where(Membership.group_set_id > after)
        rows = list(await self.session.execute(query.order_by(Membership.group_set_id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        records = [_membership(m, name) for m, name in rows]
        return records, (records[-1].group_set_id if more and records else None)

    # -- group-sets --------------------------------------------------------------------------

    async def create_group_set(self, new: NewGroupSet) -> CreateResult:
        """T2/T4 group-set cap under the owner's lock; the first sub-group "<name>1" (T5)."""
        if new.request_id:
            earlier = await self._created_by_request(new.owner_account_id, new.request_id)
            if earlier is not None:
                return CreateResult(earlier, created=False)
        key = domain.owner_key(new.kind, new.store_id, new.streamer_id)
        await self._ensure_owner(key, new.kind)
        owner = await self._lock_owner(key)
        if new.request_id:  # a concurrent replay may have committed while we waited for the lock
            earlier = await self._created_by_request(new.owner_account_id, new.request_id)
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
            created_at=self.now,
            dissolved_at=None,
        )
        self.session.add(row)
        self.audit(key, "group_set.create", row.id, "", f"{new.kind} {new.name!r} {describe_threshold(new.threshold)}")
        await self.session.flush()
        self.session.add(self._new_sub_group(row, 1))
        for account_id in new.admin_ids:
            self.session.add(Admin(group_set_id=row.id, account_id=account_id, added_at=self.now))
            self.audit(row.owner_key, "admin.add", row.id, "", account_id)
        owner.group_set_count += 1
        await self.session.flush()
        return CreateResult((await self._records([row]))[0], created=True)

    async def dissolve(self, group_set_id: str) -> GroupKind | None:
        """Marks the set dissolved, removes its memberships and frees the account's counts.

        Returns the kind, or None when it was already dissolved (a retry changes nothing).
        """
        key = await self._owner_key_of(group_set_id, include_dissolved=True)
        owner = await self._lock_owner(key)
        row = await self._lock_set(group_set_id, include_dissolved=True)
        if row.dissolved_at is not None:
            return None
        await self.session.execute(delete(Membership).where(Membership.group_set_id == row.id))
        await self.session.execute(update(SubGroup).where(SubGroup.group_set_id == row.id).values(member_count=0))
        owner.member_count -= row.member_count
        owner.group_set_count -= 1
        self.audit(key, "group_set.dissolve", row.id, f"{row.member_count} members", "dissolved")
        row.member_count = 0
        row.dissolved_at = self.now
        await self.session.flush()
        return GroupKind(row.kind)

    async def update_settings(self, group_id: str, change: SettingsChange) -> GroupSetRecord:
        """R3: only on a group-set; C11: a new threshold bumps the version, members stay."""
        row = await self.session.scalar(
            select(GroupSet).where(GroupSet.id == group_id).with_for_update().execution_options(populate_existing=True)
        )
        if row is None:
            sub = await self.session.get(SubGroup, group_id)
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
            for sub in await self._sub_group_rows(row.id):
                sub.name = domain.sub_group_name(change.name, sub.seq)
        if change.announcement is not None:
            row.announcement = change.announcement
        if change.newcomer_reply is not None:
            row.newcomer_reply = change.newcomer_reply
        if change.is_public is not None:
            row.is_public = change.is_public
        await self.session.flush()
        return (await self._records([row]))[0]

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

    # -- admins (R2) -------------------------------------------------------------------------

    async def add_admin(self, group_set_id: str, account_id: str) -> GroupSetRecord:
        row = await self._lock_set(group_set_id)
        if account_id == row.owner_account_id:
            raise InvalidArgument.one("account_id", "the owner cannot be an admin of their own group-set")
        if await self.session.get(Admin, (row.id, account_id)) is None:
            count = await self.session.scalar(select(func.count()).where(Admin.group_set_id == row.id)) or 0
            failures = domain.admin_limit_failures(self.rules, int(count))
            if failures:
                raise RuleRefusal(failures)
            self.session.add(Admin(group_set_id=row.id, account_id=account_id, added_at=self.now))
            self.audit(row.owner_key, "admin.add", row.id, "", account_id)
            await self.session.flush()
        return (await self._records([row]))[0]

    async def remove_admin(self, group_set_id: str, account_id: str) -> GroupSetRecord:
        row = await self._lock_set(group_set_id)
        admin = await self.session.get(Admin, (row.id, account_id))
        if admin is None:
            raise NotFound("admin", f"{group_set_id}/{account_id}")
        await self.session.delete(admin)
        self.audit(row.owner_key, "admin.remove", row.id, account_id, "")
        await self.session.flush()
        return (await self._records([row]))[0]

    # -- members -----------------------------------------------------------------------------

    async def remove_member(self, group_set_id: str, consumer_id: str) -> GroupKind:
        """A leave frees room in the sub-group, the set and the account."""
        key = await self._owner_key_of(group_set_id)
        owner = await self._lock_owner(key)
        row = await self._lock_set(group_set_id)
        if not await self._free_seat(owner, row, consumer_id):
            raise NotFound("membership", f"{group_set_id}/{consumer_id}")
        return GroupKind(row.kind)

    async def _free_seat(self, owner: CapacityOwner, row: GroupSet, consumer_id: str) -> bool:
        """Deletes the membership and frees its seat in the sub-group, the set and the account (both locked).

        False when the consumer is not a member.
        """
        membership = await self.session.get(Membership, (row.id, consumer_id), populate_existing=True)
        if membership is None:
            return False
        sub = await self.session.get(SubGroup, membership.sub_group_id, populate_existing=True)
        assert sub is not None
        await self.session.delete(membership)
        sub.member_count -= 1
        row.member_count -= 1
        owner.member_count -= 1
        await self.session.flush()
        return True

    # -- removals (R5) -----------------------------------------------------------------------

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
        and whether it is the replay of an earlier call with ``request_id``; a
        consumer who is not a member is NOT_FOUND, or ``(None, False)`` with
        ``missing_ok`` (a store blacklist sweeping the store's groups).
        """
        key = await self._owner_key_of(group_set_id)
        owner = await self._lock_owner(key)
        row = await self._lock_set(group_set_id)
        if request_id:
            earlier = await self.session.scalar(
                select(Removal).where(
                    Removal.group_set_id == row.id,
                    Removal.consumer_id == consumer_id,
                    Removal.request_id == request_id,
                )
            )
            if earlier is not None:
                return _removal(earlier, row), True
        is_admin = await self.session.get(Admin, (row.id, consumer_id)) is not None
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
            consumer_id=consumer_id,
            group_set_id=row.id,
            cause=str(cause),
            reason=reason,
            barred=barred,
            actor=self.actor,
            request_id=request_id or None,
            removed_at=self.now,
        )
        self.session.add(removal)
        action = "sleeping.remove" if cause is RemovalCause.SLEEPING else "member.remove"
        self.audit(key, action, row.id, consumer_id, domain.describe_removal(cause, reason, barred))
        await self.session.flush()
        return _removal(removal, row), False

    async def store_sets_of_member(self, store_id: str, consumer_id: str) -> list[str]:
        """The store's group-sets (store groups and its live groups) the consumer is in now."""
        return list(
            await self.session.scalars(
                select(Membership.group_set_id)
                .join(GroupSet, GroupSet.id == Membership.group_set_id)
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
        query = (
            select(Removal, GroupSet)
            .join(GroupSet, GroupSet.id == Removal.group_set_id)
            .where(Removal.consumer_id == consumer_id)
        )
        if before is not None:
            query = query.where(Removal.id < before)
        rows = list(await self.session.execute(query.order_by(Removal.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = rows[-1][0].id if more and rows else None
        return [_removal(removal, group_set) for removal, group_set in rows], cursor

    # -- helpers -----------------------------------------------------------------------------

    async def _owner_key_of(self, group_set_id: str, *, include_dissolved: bool = False) -> str:
        """The set's capacity owner, read without a lock: it never changes."""
        found = (
            await self.session.execute(
                select(GroupSet.owner_key, GroupSet.dissolved_at).where(GroupSet.id == group_set_id)
            )
        ).first()
        if found is None or (found.dissolved_at is not None and not include_dissolved):
            raise NotFound("group_set", group_set_id)
        return str(found.owner_key)

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

    async def _lock_set(self, group_set_id: str, *, include_dissolved: bool = False) -> GroupSet:
        row = await self.session.scalar(
            select(GroupSet)
            .where(GroupSet.id == group_set_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if row is None or (row.dissolved_at is not None and not include_dissolved):
            raise NotFound("group_set", group_set_id)
        return row

    async def _sub_group_rows(self, group_set_id: str) -> list[SubGroup]:
        return list(
            await self.session.scalars(
                select(SubGroup)
                .where(SubGroup.group_set_id == group_set_id)
                .order_by(SubGroup.seq)
                .execution_options(populate_existing=True)
            )
        )

    def _new_sub_group(self, row: GroupSet, seq: int) -> SubGroup:
        return SubGroup(
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

    async def _created_by_request(self, owner_account_id: str, request_id: str) -> GroupSetRecord | None:
        row = await self.session.scalar(
            select(GroupSet).where(GroupSet.owner_account_id == owner_account_id, GroupSet.request_id == request_id)
        )
        return None if row is None else (await self._records([row]))[0]

    async def _records(self, rows: Sequence[GroupSet]) -> list[GroupSetRecord]:
        """Group-sets with their sub-groups and admins, two queries for any number of sets."""
        ids = [r.id for r in rows]
        subs: dict[str, list[SubGroupRecord]] = {i: [] for i in ids}
        admins: dict[str, list[str]] = {i: [] for i in ids}
        if ids:
            for sub in await self.session.scalars(
                select(SubGroup)
                .where(SubGroup.group_set_id.in_(ids))
                .order_by(SubGroup.group_set_id, SubGroup.seq)
                .execution_options(populate_existing=True)
            ):
                subs[sub.group_set_id].append(SubGroupRecord(sub.id, sub.seq, sub.name, sub.member_count))
            for admin in await self.session.scalars(
                select(Admin).where(Admin.group_set_id.in_(ids)).order_by(Admin.group_set_id, Admin.added_at)
            ):
                admins[admin.group_set_id].append(admin.account_id)
        return [group_set_record(r, subs[r.id], admins[r.id]) for r in rows]


def group_set_record(row: Any, sub_groups: Sequence[SubGroupRecord], admin_ids: Sequence[str]) -> GroupSetRecord:
    """A group-set as the service hands it on, from its row (an ORM object or a Core row alike)."""
    return GroupSetRecord(
        id=row.id,
        kind=GroupKind(row.kind),
        name=row.name,
        owner_account_id=row.owner_account_id,
        store_id=row.store_id or "",
        streamer_id=row.streamer_id or "",
        threshold=threshold_from_row(row.threshold_kind, row.threshold_params),
        password_digest=row.password_digest,
        threshold_version=row.threshold_version,
        is_public=row.is_public,
        announcement=row.announcement,
        newcomer_reply=row.newcomer_reply,
        member_count=row.member_count,
        created_at=row.created_at,
        sub_groups=tuple(sub_groups),
        admin_ids=tuple(admin_ids),
    )


def set_fill(record: GroupSetRecord) -> domain.SetFill:
    """A group-set's counts as the capacity rules read them."""
    return domain.SetFill(
        record.kind, record.member_count, tuple(domain.SubGroupFill(s.seq, s.member_count) for s in record.sub_groups)
    )


def _membership(m: Membership, sub_group_name: str) -> MembershipRecord:
    return MembershipRecord(m.group_set_id, m.sub_group_id, sub_group_name, m.consumer_id, m.joined_at, m.notified_at)


def _removal(removal: Removal, group_set: GroupSet) -> RemovalRecord:
    return RemovalRecord(
        group_set_id=group_set.id,
        group_set_name=group_set.name,
        store_id=group_set.store_id or "",
        consumer_id=removal.consumer_id,
        cause=RemovalCause(removal.cause),
        reason=removal.reason,
        barred=removal.barred,
        actor_id=removal.actor,
        removed_at=removal.removed_at,
    )


def join_refusal(kind: GroupKind, failures: list[Failure], code: grpc.StatusCode) -> JoinRefusal:
    return JoinRefusal(kind, tuple(f.rule_id for f in failures), RuleRefusal(failures, code=code))
