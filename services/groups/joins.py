"""The join path's persistence: CheckJoin and AddMember, in few prebuilt statements.

A join is the busiest write there is, so this path skips the ORM
(docs/adr/0006-hot-paths-off-the-orm.md) and reads what a
decision needs in as few round trips as the rules allow:

* the set's owner, from ``set_owners`` (kept by the process once read), which
  every statement names (ADR 0014);
* the capacity owner, locked;
* the set, locked, with the consumer's membership, first-join flag and the
  store's group level (T2) as subqueries of the same statement;
* the set's sub-groups (at most ``sub_groups_per_set`` rows);
* the writes: on PostgreSQL one statement (data-modifying CTEs), so the
  owner's lock, which every join of a store waits for, is held for four
  round trips rather than eight; on SQLite, where a statement is a local
  call, one statement each.

The locks are taken in the order the rest of the service uses (owner, then
set; see ``repository``), so the caps of SPEC T6 hold across replicas. The
statements are built once, with bound parameters, so SQLAlchemy finds their
compiled form without rebuilding them.

Kept as one module (about 430 lines): the join path's statements are built together, so the
SQLite and PostgreSQL forms of one join stay side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import grpc
from sqlalchemy import Executable, Row, Select, bindparam, exists, insert, literal_column, select, text, update
from sqlalchemy.exc import IntegrityError

from services.common.db import Statements
from services.common.errors import Aborted, NotFound, RuleRefusal
from services.common.ids import new_id
from services.common.rules import Rules
from services.common.schema import table_of
from services.common.sqlite_driver import on_driver
from services.common.sqltypes import UtcDateTime
from services.groups import rules as domain
from services.groups.memberships import MEMBERSHIP as _MEMBERSHIP_OF
from services.groups.models import (
    Admin,
    CapacityOwner,
    FirstJoin,
    GroupLevel,
    GroupSet,
    JoinRequest,
    Membership,
    SubGroup,
)
from services.groups.records import (
    GroupSetRecord,
    JoinRefusal,
    JoinResult,
    MembershipRecord,
    SubGroupRecord,
    group_set_record,
    join_refusal,
    month_of,
    set_fill,
)
from services.groups.rules import GroupKind
from services.groups.set_owners import owner_of

owners = table_of(CapacityOwner)
sets = table_of(GroupSet)
sub_groups = table_of(SubGroup)
memberships = table_of(Membership)
first_joins = table_of(FirstJoin)
join_requests = table_of(JoinRequest)
admins = table_of(Admin)
levels = table_of(GroupLevel)

OWNER, SET_ID, CONSUMER = bindparam("owner"), bindparam("set_id"), bindparam("consumer")


def _set_with_consumer(*, lock: bool) -> Select[Any]:
    """The set, and what the join needs to know of the consumer and the store beside it."""
    member = exists().where(
        memberships.c.owner_key == OWNER, memberships.c.group_set_id == SET_ID, memberships.c.consumer_id == CONSUMER
    )
    joined_before = exists().where(
        first_joins.c.owner_key == OWNER, first_joins.c.group_set_id == SET_ID, first_joins.c.consumer_id == CONSUMER
    )
    level = (  # a store's owner key is its id; a streamer's finds no level
        select(levels.c.level)
        .where(levels.c.store_id == OWNER, levels.c.month <= bindparam("month"))
        .order_by(levels.c.month.desc())
        .limit(1)
        .scalar_subquery()
    )
    stmt = select(
        sets, member.label("is_member"), joined_before.label("joined_before"), level.label("store_level")
    ).where(sets.c.owner_key == OWNER, sets.c.id == SET_ID)
    return stmt.with_for_update(of=sets) if lock else stmt


# The join's statements; on SQLite each runs on the sqlite3 driver, compiled once (``on_driver``).
_OWNER = on_driver(select(owners).where(owners.c.owner_key == OWNER))
_LOCK_OWNER = on_driver(_OWNER.with_for_update(of=owners))
_SET_FOR_CHECK = on_driver(_set_with_consumer(lock=False))
_SET_FOR_JOIN = on_driver(_set_with_consumer(lock=True))
_SUB_GROUPS = on_driver(
    select(sub_groups)
    .where(sub_groups.c.owner_key == OWNER, sub_groups.c.group_set_id == SET_ID)
    .order_by(sub_groups.c.seq)
)
_ADMINS = on_driver(
    select(admins.c.account_id)
    .where(admins.c.owner_key == OWNER, admins.c.group_set_id == SET_ID)
    .order_by(admins.c.added_at)
)
_EARLIER_JOIN = on_driver(
    select(join_requests).where(
        join_requests.c.owner_key == OWNER,
        join_requests.c.group_set_id == SET_ID,
        join_requests.c.consumer_id == CONSUMER,
        join_requests.c.request_id == bindparam("request_id"),
    )
)
NOW = bindparam("now", type_=UtcDateTime())
# The writes of a join, every value a bound parameter of ``JoinWrite``'s names.
_NEW_SUB_GROUP = on_driver(
    insert(sub_groups).values(
        owner_key=OWNER,
        id=bindparam("sub_id"),
        group_set_id=SET_ID,
        seq=bindparam("sub_seq"),
        name=bindparam("sub_name"),
        member_count=1,
        created_at=NOW,
    )
)
_COUNT_SUB_GROUP = on_driver(
    update(sub_groups)
    .where(sub_groups.c.owner_key == OWNER, sub_groups.c.id == bindparam("sub_id"))
    .values(member_count=sub_groups.c.member_count + 1)
)
_COUNT_SET = on_driver(
    update(sets)
    .where(sets.c.owner_key == OWNER, sets.c.id == SET_ID)
    .values(
        member_count=sets.c.member_count + 1,
        sub_group_count=sets.c.sub_group_count + bindparam("new_sub_groups"),
    )
)
_COUNT_OWNER = on_driver(
    update(owners).where(owners.c.owner_key == OWNER).values(member_count=owners.c.member_count + 1)
)
_FIRST_JOIN = on_driver(
    insert(first_joins).values(owner_key=OWNER, group_set_id=SET_ID, consumer_id=CONSUMER, first_joined_at=NOW)
)
_MEMBERSHIP = on_driver(
    insert(memberships).values(
        owner_key=OWNER,
        group_set_id=SET_ID,
        consumer_id=CONSUMER,
        sub_group_id=bindparam("sub_id"),
        request_id=bindparam("member_request"),
        newcomer_reply=bindparam("reply"),
        messages_hidden=bindparam("hidden"),
        joined_at=NOW,
        last_active_at=None,
        notified_at=None,
    )
)
_JOIN_REQUEST = on_driver(
    insert(join_requests).values(
        owner_key=OWNER,
        group_set_id=SET_ID,
        consumer_id=CONSUMER,
        request_id=bindparam("request"),
        sub_group_id=bindparam("sub_id"),
        sub_group_name=bindparam("sub_name"),
        newcomer_reply=bindparam("reply"),
        joined_at=NOW,
    )
)


@dataclass(frozen=True)
class JoinWrite:
    """What a placed join writes: the parameters of the statements above."""

    set_id: str
    consumer: str
    owner: str
    sub_id: str
    sub_seq: int
    sub_name: str
    new_sub_groups: int
    reply: str
    hidden: bool
    request: str
    now: datetime
    first_join: bool  # R3: the consumer never joined the set before

    def statements(self) -> list[Executable]:
        """The writes in order: the sub-group, the counters, the first join, the member, the request."""
        return _join_writes(bool(self.new_sub_groups), self.first_join, bool(self.request))

    def in_one_statement(self) -> Executable:
        return _writes_in_one(bool(self.new_sub_groups), self.first_join, bool(self.request))

    def params(self) -> dict[str, Any]:
        # The fields as they are, not ``dataclasses.asdict``'s deep copies (docs/adr/0006-hot-paths-off-the-orm.md).
        return {**vars(self), "member_request": self.request or None}


def _join_writes(new_sub_group: bool, first_join: bool, with_request: bool) -> list[Executable]:
    return [
        _NEW_SUB_GROUP if new_sub_group else _COUNT_SUB_GROUP,
        _COUNT_SET,
        _COUNT_OWNER,
        *([_FIRST_JOIN] if first_join else []),
        _MEMBERSHIP,
        *([_JOIN_REQUEST] if with_request else []),
    ]


@cache
def _writes_in_one(new_sub_group: bool, first_join: bool, with_request: bool) -> Executable:
    """PostgreSQL: a join's writes as data-modifying CTEs of one statement (one round trip).

    Every CTE runs whether or not the final SELECT reads it, and the foreign
    keys are checked at the end of the statement, so a new sub-group and its
    first member can be written together. A second membership (C13) still
    fails the statement on the primary key, as the single insert would.
    """
    writes = _join_writes(new_sub_group, first_join, with_request)
    parts = [w.returning(literal_column("1").label("written")).cte(f"w{n}") for n, w in enumerate(writes)]
    return select(parts[-1].c.written).add_cte(*parts[:-1])


# PostgreSQL: a plain join in one statement (the ``qun_join`` function of migration 0006), on the set's owner.
_JOIN_IN_ONE = text(
    "SELECT status, kind, sub_group_id, sub_group_name, new_sub_group, newcomer_reply FROM qun_join("
    ":owner, :set_id, :consumer, :version, :request, :hidden, :now, :month, :new_sub_id, "
    ":store_sub_cap, :store_set_cap, :store_max_subs, :live_sub_cap, :live_set_cap, :live_max_subs, "
    ":store_members, :max_members, :live_members)"
)


def join_caps(rules: Rules) -> dict[str, Any]:
    """The caps ``qun_join`` checks, from the rules file (T1, T2, T3, T4)."""
    store, live = rules.store_groups, rules.live_groups
    return {
        "store_sub_cap": store.sub_group_capacity,
        "store_set_cap": store.group_set_capacity,
        "store_max_subs": store.sub_groups_per_set,
        "live_sub_cap": live.sub_group_capacity,
        "live_set_cap": live.group_set_capacity,
        "live_max_subs": live.sub_groups_per_set,
        "store_members": list(store.members_by_level),
        "max_members": rules.expansion.max_members,
        "live_members": live.members_per_streamer,
    }


class JoinRepository:
    """The join path over one connection in the caller's transaction."""

    def __init__(self, connection: Statements, rules: Rules, now: datetime) -> None:
        self.connection = connection
        self.rules = rules
        self.now = now

    async def check(self, group_set_id: str, consumer_id: str) -> tuple[GroupSetRecord, list[Any], bool]:
        """The groups side of a join, read-only: C13 and every capacity rule, and is_staff."""
        params = await self._params(group_set_id, consumer_id)
        row = (await self.connection.execute(_SET_FOR_CHECK, params)).first()
        if row is None or row.dissolved_at is not None:
            raise NotFound("group_set", group_set_id)
        owner = (await self.connection.execute(_OWNER, params)).first()
        subs = (await self.connection.execute(_SUB_GROUPS, params)).all()
        admin_ids = tuple((await self.connection.execute(_ADMINS, params)).scalars())
        sub_records = [SubGroupRecord(s.id, s.seq, s.name, s.member_count) for s in subs]
        record = group_set_record(row, sub_records, admin_ids)
        failures = domain.join_failures(
            self.rules, set_fill(record), _account_fill(row, owner), already_member=bool(row.is_member)
        )
        is_staff = consumer_id == record.owner_account_id or consumer_id in record.admin_ids
        return record, failures, is_staff

    async def add(
        self,
        group_set_id: str,
        consumer_id: str,
        *,
        request_id: str,
        threshold_version: int,
        messages_hidden: bool,
    ) -> JoinResult | JoinRefusal:
        """One join under the owner's and the set's row locks (T6), placed by T5.

        A consumer already in the set gets their membership back, flagged
        ``already_member``, and nothing changes: joining is idempotent, and C13
        (one sub-group per set) holds because nothing is written.

        A request id's scope is the group-set and the consumer, which are the
        whole of what a join asks (the threshold version and the message flag are
        the gateway's reading of the moment, not the caller's choice): a repeated
        id is always the same request, answered as the first time, even after the
        member left (``services.common.request_ids``).
        """
        execute = self.connection.execute
        params = await self._params(group_set_id, consumer_id)
        owner = (await execute(_LOCK_OWNER, params)).first()
        row = (await execute(_SET_FOR_JOIN, params)).first()
        if owner is None or row is None or row.dissolved_at is not None:
            raise NotFound("group_set", group_set_id)
        kind = GroupKind(row.kind)
        if request_id:
            earlier = (await execute(_EARLIER_JOIN, {**params, "request_id": request_id})).first()
            if earlier is not None:
                membership = MembershipRecord(
                    row.id, earlier.sub_group_id, earlier.sub_group_name, consumer_id, earlier.joined_at
                )
                return JoinResult(kind, membership, earlier.newcomer_reply, new_sub_group=False, replayed=True)
        if row.is_member:
            # Joining is idempotent: a member asking again gets the membership they have (C13 keeps it one).
            existing = (await execute(_MEMBERSHIP_OF, params)).first()
            if existing is not None:
                membership = MembershipRecord(*existing)
                return JoinResult(kind, membership, "", new_sub_group=False, replayed=True, already_member=True)
        if threshold_version != row.threshold_version:
            return JoinRefusal(kind, ("C11",), _threshold_changed(row.threshold_version, threshold_version))
        if row.is_member:  # pragma: no cover - read under the set's lock just above
            return join_refusal(kind, domain.membership_failures(True), grpc.StatusCode.FAILED_PRECONDITION)
        subs = (await execute(_SUB_GROUPS, params)).all()
        fill = domain.SetFill(kind, row.member_count, tuple(domain.SubGroupFill(s.seq, s.member_count) for s in subs))
        failures = domain.capacity_failures(self.rules, fill, _account_fill(row, owner))
        placement = domain.place(self.rules, fill)
        if failures or placement is None:
            return join_refusal(kind, failures, grpc.StatusCode.RESOURCE_EXHAUSTED)

        if placement.new_sub_group:
            sub_id, sub_name = new_id("sg"), domain.sub_group_name(row.name, placement.seq)
        else:
            sub = next(s for s in subs if s.seq == placement.seq)
            sub_id, sub_name = sub.id, sub.name
        # R3: the newcomer reply is shown on the first join ever, not after leave + rejoin.
        reply = "" if row.joined_before else row.newcomer_reply
        write = JoinWrite(
            set_id=row.id,
            consumer=consumer_id,
            owner=owner.owner_key,
            sub_id=sub_id,
            sub_seq=placement.seq,
            sub_name=sub_name,
            new_sub_groups=int(placement.new_sub_group),
            reply=reply,
            hidden=messages_hidden,
            request=request_id,
            now=self.now,
            first_join=not row.joined_before,
        )
        try:
            await self._write(write)
        except IntegrityError:
            # Unreachable while the locks hold; the primary key still refuses a second row (C13).
            # Raised, not returned: the failed statement leaves a transaction that must roll back.
            raise RuleRefusal(domain.membership_failures(True)) from None
        membership = MembershipRecord(row.id, sub_id, sub_name, consumer_id, self.now)
        return JoinResult(kind, membership, reply, new_sub_group=placement.new_sub_group, replayed=False)

    async def add_in_one(
        self, group_set_id: str, consumer_id: str, *, request_id: str, threshold_version: int, messages_hidden: bool
    ) -> JoinResult | None:
        """PostgreSQL: a plain join in one statement, its own transaction; None for anything else.

        ``qun_join`` joins only where ``add`` would, and answers ``fallback`` for
        every other case (a replay, a member, a changed threshold, a cap), which
        ``add`` then answers, refusals and all.
        """
        owner = await owner_of(self.connection, group_set_id)
        if owner is None:
            return None  # ``add`` answers NOT_FOUND
        params = {
            "owner": owner,
            "set_id": group_set_id,
            "consumer": consumer_id,
            "version": threshold_version,
            "request": request_id,
            "hidden": messages_hidden,
            "now": self.now,
            "month": month_of(self.now),
            "new_sub_id": new_id("sg"),
            **join_caps(self.rules),
        }
        row = (await self.connection.execute(_JOIN_IN_ONE, params)).one()
        if row.status != "joined":
            return None
        membership = MembershipRecord(group_set_id, row.sub_group_id, row.sub_group_name, consumer_id, self.now)
        return JoinResult(
            GroupKind(row.kind), membership, row.newcomer_reply, new_sub_group=row.new_sub_group, replayed=False
        )

    async def _params(self, group_set_id: str, consumer_id: str) -> dict[str, Any]:
        """The parameters every statement of the join names: the set's owner first (ADR 0014)."""
        owner = await owner_of(self.connection, group_set_id)
        if owner is None:
            raise NotFound("group_set", group_set_id)
        return {"owner": owner, "set_id": group_set_id, "consumer": consumer_id, "month": month_of(self.now)}

    async def _write(self, write: JoinWrite) -> None:
        params = write.params()
        if self.connection.dialect.name == "postgresql":
            await self.connection.execute(write.in_one_statement(), params)
            return
        for statement in write.statements():
            await self.connection.execute(statement, params)


def _account_fill(row: Row[Any], owner: Row[Any] | None) -> domain.AccountFill:
    kind = GroupKind(row.kind)
    level = int(row.store_level or 0) if kind is GroupKind.STORE else 0
    if owner is None:
        return domain.AccountFill(kind, 0, 0, level)
    return domain.AccountFill(kind, owner.member_count, owner.group_set_count, level, owner.extra_members)


def _threshold_changed(current: int, checked: int) -> Aborted:
    return Aborted(
        f"the threshold changed (version {current}, checked {checked}); check again",
        reason="THRESHOLD_CHANGED",
        metadata={"rules": "C11", "threshold_version": str(current), "checked_version": str(checked)},
    )
