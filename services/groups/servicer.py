"""The GroupsService RPCs: validate the whole request, run one transaction, answer.

Input is checked field by field before anything touches the database (one
INVALID_ARGUMENT naming every bad field); rule refusals are raised as
``services.common.errors`` exceptions, which the error interceptor turns into
rich statuses. Domain metrics are counted after the transaction committed.

Over 400 lines on purpose: one class is the GroupsService contract, its RPCs a few lines each (fields, one unit
of work, metrics, the answer); persistence is in the aggregates' modules.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from sqlalchemy.ext.asyncio import AsyncSession

from qun.common.v1 import groups_pb2 as common_groups_pb2
from qun.groups.v1 import groups_pb2, groups_pb2_grpc
from services.common import passwords
from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import NotFound, RuleRefusal, verdict
from services.common.interceptors import ACTOR_HEADER, metadata_value
from services.common.page_tokens import (
    decode_keyset,
    decode_page_token,
    decode_position,
    encode_keyset,
    encode_page_token,
    encode_position,
)
from services.common.races import retry_lost_race
from services.common.rules import GROUP_LEVELS, Rules
from services.common.validation import MAX_NAME_CHARS, Fields, require_ids, require_page
from services.groups import memberships, metrics
from services.groups import rules as domain
from services.groups.convert import (
    CAUSE_FROM_PROTO,
    KIND_FROM_PROTO,
    group_set_to_proto,
    membership_to_proto,
    removal_to_proto,
    threshold_from_proto,
)
from services.groups.group_sets import GroupSets
from services.groups.joins import JoinRepository
from services.groups.members import Members
from services.groups.records import CreateResult, JoinRefusal, JoinResult, NewGroupSet, SettingsChange
from services.groups.repository import GroupsUnit
from services.groups.rules import GroupKind, RemovalCause

U = TypeVar("U", bound=GroupsUnit)
MAX_REASON_CHARS = 200  # a removal's reason, shown to the removed member (R5)


class GroupsServiceServicer(groups_pb2_grpc.GroupsServiceServicer):
    def __init__(self, db: Database, rules: Rules, clock: Clock) -> None:
        self.db = db
        self.rules = rules
        self.clock = clock

    def _unit(self, unit: type[U], session: AsyncSession, context: grpc.aio.ServicerContext) -> U:
        """One unit of work, acting for the caller the gateway named (the audit trail's actor)."""
        return unit(session, self.rules, self.clock.now(), metadata_value(context, ACTOR_HEADER))

    # -- group-sets --------------------------------------------------------------------------

    async def CreateGroupSet(
        self, request: groups_pb2.CreateGroupSetRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.CreateGroupSetResponse:
        f = Fields()
        request_id = f.identifier("request_id", request.request_id, required=False)
        kind = KIND_FROM_PROTO.get(f.enum("kind", request.kind, common_groups_pb2.GroupKind))
        name = f.text("name", request.name, max_chars=MAX_NAME_CHARS, required=True)
        owner = f.identifier("owner_account_id", request.owner_account_id)
        if kind is GroupKind.STORE:
            f.identifier("store_id", request.store_id)
            if request.streamer_id:
                f.fail("streamer_id", "only live group-sets have a streamer")
        elif kind is GroupKind.LIVE:
            f.identifier("streamer_id", request.streamer_id)
            f.identifier("store_id", request.store_id, required=False)
        threshold, password = threshold_from_proto(f, request.threshold, kind, present=request.HasField("threshold"))
        f.text("announcement", request.announcement)
        f.text("newcomer_reply", request.newcomer_reply)
        admin_ids: list[str] = []
        for i, account_id in enumerate(request.admin_ids):
            f.identifier(f"admin_ids[{i}]", account_id)
            if account_id and account_id == owner:
                f.fail(f"admin_ids[{i}]", "the owner cannot be an admin of their own group-set")
            if account_id not in admin_ids:
                admin_ids.append(account_id)
        f.done()
        assert kind is not None and threshold is not None
        too_many = domain.admin_limit_failures(self.rules, 0, len(admin_ids))
        if too_many:
            raise RuleRefusal(too_many)
        new = NewGroupSet(
            kind=kind,
            name=name,
            owner_account_id=owner,
            store_id=request.store_id,
            streamer_id=request.streamer_id,
            threshold=threshold,
            password_digest=passwords.digest(password) if password else "",
            admin_ids=tuple(admin_ids),
            is_public=request.is_public,
            announcement=request.announcement,
            newcomer_reply=request.newcomer_reply,
            request_id=request_id,
        )

        async def create() -> CreateResult:
            async with self.db.transaction() as session:
                return await self._unit(GroupSets, session, context).create_group_set(new)

        result = await retry_lost_race(create)
        if result.created:
            metrics.group_sets_created.labels(str(kind)).inc()
            metrics.sub_groups_created.labels(str(kind)).inc()
        return groups_pb2.CreateGroupSetResponse(group_set=group_set_to_proto(result.group_set, self.rules))

    async def GetGroupSet(
        self, request: groups_pb2.GetGroupSetRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.GetGroupSetResponse:
        require_ids(request, "group_set_id")
        async with self.db.transaction() as session:
            record = await self._unit(GroupSets, session, context).group_set(request.group_set_id)
        return groups_pb2.GetGroupSetResponse(group_set=group_set_to_proto(record, self.rules))

    async def ListGroupSets(
        self, request: groups_pb2.ListGroupSetsRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.ListGroupSetsResponse:
        f = Fields()
        if bool(request.store_id) == bool(request.streamer_id):
            f.fail("store_id", "exactly one of store_id and streamer_id is required")
        f.identifier("store_id", request.store_id, required=False)
        f.identifier("streamer_id", request.streamer_id, required=False)
        limit = f.page_size("page_size", request.page_size)
        f.done()
        cursor = decode_keyset(request.page_token)
        key = (
            domain.owner_key(GroupKind.STORE, request.store_id, "")
            if request.store_id
            else domain.owner_key(GroupKind.LIVE, "", request.streamer_id)
        )
        async with self.db.transaction() as session:
            records, after = await self._unit(GroupSets, session, context).list_group_sets(key, cursor, limit)
        return groups_pb2.ListGroupSetsResponse(
            group_sets=[group_set_to_proto(r, self.rules) for r in records],
            next_page_token=encode_keyset(after),
        )

    async def UpdateSettings(
        self, request: groups_pb2.UpdateSettingsRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.UpdateSettingsResponse:
        f = Fields()
        f.identifier("group_id", request.group_id)
        name = None
        if request.HasField("name"):
            name = f.text("name", request.name, max_chars=MAX_NAME_CHARS, required=True)
        announcement = f.text("announcement", request.announcement) if request.HasField("announcement") else None
        reply = f.text("newcomer_reply", request.newcomer_reply) if request.HasField("newcomer_reply") else None
        threshold, password = (None, "")
        if request.HasField("threshold"):
            # Its kind is checked against the group-set's kind once the set is read (C9, C10).
            threshold, password = threshold_from_proto(f, request.threshold, None)
        f.done()
        change = SettingsChange(
            name=name,
            announcement=announcement,
            newcomer_reply=reply,
            is_public=request.is_public if request.HasField("is_public") else None,
            threshold=threshold,
            password_digest=passwords.digest(password) if password else "",
        )
        async with self.db.transaction() as session:
            record = await self._unit(GroupSets, session, context).update_settings(request.group_id, change)
        return groups_pb2.UpdateSettingsResponse(group_set=group_set_to_proto(record, self.rules))

    async def DissolveGroupSet(
        self, request: groups_pb2.DissolveGroupSetRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.DissolveGroupSetResponse:
        require_ids(request, "group_set_id")
        async with self.db.transaction() as session:
            await self._unit(GroupSets, session, context).dissolve(request.group_set_id)
        return groups_pb2.DissolveGroupSetResponse()

    async def SetGroupLevel(
        self, request: groups_pb2.SetGroupLevelRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.SetGroupLevelResponse:
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.month("month", request.month)
        f.in_range("level", request.level, 0, GROUP_LEVELS - 1)
        f.done()
        async with self.db.transaction() as session:
            await self._unit(GroupsUnit, session, context).set_group_level(
                request.store_id, request.month, request.level
            )
        return groups_pb2.SetGroupLevelResponse()

    async def GetGroupLevel(
        self, request: groups_pb2.GetGroupLevelRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.GetGroupLevelResponse:
        require_ids(request, "store_id")
        async with self.db.transaction() as session:
            level = await self._unit(GroupsUnit, session, context).store_level(request.store_id)
        return groups_pb2.GetGroupLevelResponse(level=level)

    # -- joins -------------------------------------------------------------------------------

    async def CheckJoin(
        self, request: groups_pb2.CheckJoinRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.CheckJoinResponse:
        require_ids(request, "group_set_id", "consumer_id")
        async with self.db.read() as connection:
            record, failures, is_staff = await JoinRepository(connection, self.rules, self.clock.now()).check(
                request.group_set_id, request.consumer_id
            )
        return groups_pb2.CheckJoinResponse(
            group_set=group_set_to_proto(record, self.rules), verdict=verdict(failures), is_staff=is_staff
        )

    async def AddMember(
        self, request: groups_pb2.AddMemberRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.AddMemberResponse:
        f = Fields()
        request_id = f.identifier("request_id", request.request_id, required=False)
        f.identifier("group_set_id", request.group_set_id)
        f.identifier("consumer_id", request.consumer_id)
        f.positive("threshold_version", request.threshold_version)
        f.done()
        join = {
            "request_id": request_id,
            "threshold_version": request.threshold_version,
            "messages_hidden": request.messages_hidden,
        }
        now = self.clock.now()
        outcome: JoinResult | JoinRefusal | None = None
        if self.db.is_postgres:  # a plain join in one statement (joins.JoinRepository.add_in_one)
            async with self.db.single() as connection:
                outcome = await JoinRepository(connection, self.rules, now).add_in_one(
                    request.group_set_id, request.consumer_id, **join
                )
        if outcome is None:
            async with self.db.write() as connection:
                outcome = await JoinRepository(connection, self.rules, now).add(
                    request.group_set_id, request.consumer_id, **join
                )
        if isinstance(outcome, JoinRefusal):
            metrics.refused(str(outcome.kind), outcome.rule_ids)
            raise outcome.error
        if not outcome.replayed:
            metrics.joined(str(outcome.kind))
            if outcome.new_sub_group:
                metrics.sub_groups_created.labels(str(outcome.kind)).inc()
        return groups_pb2.AddMemberResponse(
            membership=membership_to_proto(outcome.membership),
            newcomer_reply=outcome.newcomer_reply,
            already_member=outcome.already_member,
        )

    async def RemoveMember(
        self, request: groups_pb2.RemoveMemberRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.RemoveMemberResponse:
        require_ids(request, "group_set_id", "consumer_id")
        async with self.db.transaction() as session:
            kind = await self._unit(Members, session, context).remove_member(request.group_set_id, request.consumer_id)
        metrics.leaves.labels(str(kind)).inc()
        return groups_pb2.RemoveMemberResponse()

    # -- removals (R5) -----------------------------------------------------------------------

    async def ExpelMember(
        self, request: groups_pb2.ExpelMemberRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.ExpelMemberResponse:
        f = Fields()
        request_id = f.identifier("request_id", request.request_id, required=False)
        f.identifier("group_set_id", request.group_set_id)
        f.identifier("consumer_id", request.consumer_id)
        cause = CAUSE_FROM_PROTO.get(request.cause)
        if cause not in (RemovalCause.OWNER, RemovalCause.ADMIN):
            f.fail("cause", "the owner's or an admin's removal (R5)")
        reason = f.text("reason", request.reason, max_chars=MAX_REASON_CHARS)
        f.done()
        assert cause is not None
        async with self.db.transaction() as session:
            removal, replayed = await self._unit(Members, session, context).expel(
                request.group_set_id,
                request.consumer_id,
                cause,
                reason=reason,
                barred=request.barred,
                request_id=request_id,
            )
        assert removal is not None
        if not replayed:
            metrics.removed(str(cause))
        return groups_pb2.ExpelMemberResponse(removal=removal_to_proto(removal), replayed=replayed)

    async def RemoveFromStore(
        self, request: groups_pb2.RemoveFromStoreRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.RemoveFromStoreResponse:
        """Every group of the store, each in its own transaction: a retry finishes what an outage left."""
        f = Fields()
        f.identifier("store_id", request.store_id)
        f.identifier("consumer_id", request.consumer_id)
        cause = CAUSE_FROM_PROTO.get(request.cause)
        if cause is not RemovalCause.STORE_BLACKLIST:
            f.fail("cause", "a store's blacklist (R5, C5)")
        reason = f.text("reason", request.reason, max_chars=MAX_REASON_CHARS)
        f.done()
        assert cause is not None
        async with self.db.transaction() as session:
            sets = await self._unit(Members, session, context).store_sets_of_member(
                request.store_id, request.consumer_id
            )
        removals = []
        for group_set_id in sets:
            try:
                async with self.db.transaction() as session:
                    removal, _ = await self._unit(Members, session, context).expel(
                        group_set_id, request.consumer_id, cause, reason=reason, barred=request.barred, missing_ok=True
                    )
            except NotFound:  # dissolved since it was listed: its members are gone already
                continue
            if removal is not None:
                metrics.removed(str(cause))
                removals.append(removal_to_proto(removal))
        return groups_pb2.RemoveFromStoreResponse(removals=removals)

    async def ListRemovals(
        self, request: groups_pb2.ListRemovalsRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.ListRemovalsResponse:
        limit = require_page(request, "consumer_id")
        before = decode_position(request.page_token)
        async with self.db.transaction() as session:
            records, after = await self._unit(Members, session, context).list_removals(
                request.consumer_id, before, limit
            )
        return groups_pb2.ListRemovalsResponse(
            removals=[removal_to_proto(r) for r in records],
            next_page_token=encode_position(after),
        )

    async def ListMemberships(
        self, request: groups_pb2.ListMembershipsRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.ListMembershipsResponse:
        limit = require_page(request, "consumer_id")
        cursor = decode_page_token(request.page_token, 1)
        async with self.db.transaction() as session:
            records, after = await self._unit(Members, session, context).list_memberships(
                request.consumer_id, cursor[0] if cursor else None, limit
            )
        return groups_pb2.ListMembershipsResponse(
            memberships=[membership_to_proto(r, self.rules.sleeping.notice_days) for r in records],
            next_page_token=encode_page_token(after) if after else "",
        )

    async def GetMembership(
        self, request: groups_pb2.GetMembershipRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.GetMembershipResponse:
        require_ids(request, "group_set_id", "consumer_id")
        async with self.db.read() as statements:
            record = await memberships.membership(statements, request.group_set_id, request.consumer_id)
        return groups_pb2.GetMembershipResponse(membership=membership_to_proto(record))

    # -- admins (R2) -------------------------------------------------------------------------

    async def AddAdmin(
        self, request: groups_pb2.AddAdminRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.AddAdminResponse:
        require_ids(request, "group_set_id", "account_id")
        async with self.db.transaction() as session:
            record = await self._unit(GroupSets, session, context).add_admin(request.group_set_id, request.account_id)
        return groups_pb2.AddAdminResponse(group_set=group_set_to_proto(record, self.rules))

    async def RemoveAdmin(
        self, request: groups_pb2.RemoveAdminRequest, context: grpc.aio.ServicerContext
    ) -> groups_pb2.RemoveAdminResponse:
        require_ids(request, "group_set_id", "account_id")
        async with self.db.transaction() as session:
            record = await self._unit(GroupSets, session, context).remove_admin(
                request.group_set_id, request.account_id
            )
        return groups_pb2.RemoveAdminResponse(group_set=group_set_to_proto(record, self.rules))
