"""The public GroupService: role rules, then the backend flows of group-sets and their members.

Backends never call each other, so every flow spanning them is here:
create = eligibility verdict, then groups; join = groups state, eligibility
verdict over the set's threshold, then groups add. Refusals from both sides
are merged, so the caller sees every failed rule at once (SPEC X1, C14).

Kept as one module (about 540 lines): it is one public service, and its RPCs share the join
flow's helpers (merging both backends' refusals, the kept group-set copies).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message

from gateway import convert, metrics
from gateway.access import caller_is_staff, is_owner, is_staff, is_staff_account
from gateway.auth import Principal, Role, current_principal
from gateway.backends import Backends, Retry
from gateway.caches import GroupSetViews
from gateway.downstream import Relayed
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.eligibility.v1 import eligibility_pb2
from qun.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from qun.groups.v1 import groups_pb2
from services.common.errors import (
    Failure,
    InvalidArgument,
    PermissionDenied,
    RuleRefusal,
    failures_from_status,
    failures_of,
    verdict,
)
from services.common.validation import Fields, require_ids

CAPACITY_RULES = frozenset({"T1", "T2", "T4"})
ALREADY_MEMBER_RULE = "C13"
SUB_GROUP_PREFIX = "sg_"
MAX_PASSWORD_CHARS = 64
MAX_REASON_CHARS = 200  # a removal's reason, shown to the removed member (R5)
# A join re-checks once when the threshold changed between check and add (SPEC C11).
JOIN_ATTEMPTS = 2


def refusal(failures: list[Failure]) -> RuleRefusal:
    """Capacity alone is RESOURCE_EXHAUSTED; any other failed rule, FAILED_PRECONDITION."""
    only_capacity = all(f.rule_id in CAPACITY_RULES for f in failures)
    return RuleRefusal(
        failures, code=grpc.StatusCode.RESOURCE_EXHAUSTED if only_capacity else grpc.StatusCode.FAILED_PRECONDITION
    )


def _explained_for(account_id: str) -> Principal | None:
    """X1 for ops: an ``Explain…`` call may name the account it explains (support answering "why can't
    this account …"); only ops may, and the answer is the named account's, with its own role's rules."""
    if not account_id:
        return None
    current_principal().require(Role.OPS, why="only ops explain a decision for another account")
    return Principal(account_id, Role.OPS)


class GroupService(gateway_pb2_grpc.GroupServiceServicer):
    def __init__(self, backends: Backends) -> None:
        self.backends = backends
        self.views = GroupSetViews()

    # -- creating -------------------------------------------------------------

    @staticmethod
    def _creator(kind: int) -> Principal:
        """E1: store groups by the store's main account; E4: live groups by a streamer."""
        principal = current_principal()
        if kind == common_pb2.GROUP_KIND_STORE:
            principal.require(Role.STORE_MAIN, rule_id="E1", why="only a store's main account creates store groups")
        elif kind == common_pb2.GROUP_KIND_LIVE:
            principal.require(Role.STREAMER, rule_id="E4", why="only a streamer creates live fan groups")
        return principal

    async def _check_create(
        self, principal: Principal, kind: int, context: grpc.aio.ServicerContext
    ) -> eligibility_pb2.CheckCreateResponse:
        check: eligibility_pb2.CheckCreateResponse = await self.backends.call(
            self.backends.eligibility.CheckCreate,
            eligibility_pb2.CheckCreateRequest(account_id=principal.subject, kind=common_pb2.GroupKind.ValueType(kind)),
            context,
            retry=Retry.SAFE,
        )
        if principal.role is Role.STORE_MAIN and check.store_id != principal.store_id:
            raise PermissionDenied("the token's store is not this account's store", rule_id="E1")
        return check

    async def CreateGroupSet(
        self, request: gateway_pb2.CreateGroupSetRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CreateGroupSetResponse:
        fields = Fields()
        fields.enum("kind", request.kind, common_pb2.GroupKind)
        fields.identifier("request_id", request.request_id, required=False)
        fields.done()
        principal = self._creator(request.kind)
        kind_name = common_pb2.GroupKind.Name(request.kind)
        check = await self._check_create(principal, request.kind, context)
        failures = failures_of(check.verdict)
        if failures:
            metrics.creates.labels(kind_name, "refused").inc()
            raise refusal(failures)
        created = await self.backends.call(
            self.backends.groups.CreateGroupSet,
            groups_pb2.CreateGroupSetRequest(
                request_id=request.request_id,
                kind=request.kind,
                name=request.name,
                threshold=request.threshold,
                owner_account_id=check.owner_account_id,
                store_id=check.store_id,
                streamer_id=check.streamer_id,
                admin_ids=[principal.subject] if check.creator_becomes_admin else [],
                is_public=request.is_public,
                announcement=request.announcement,
                newcomer_reply=request.newcomer_reply,
            ),
            context,
            retry=Retry.with_request_id(request.request_id),
        )
        metrics.creates.labels(kind_name, "created").inc()
        return gateway_pb2.CreateGroupSetResponse(
            group_set=convert.group_set(created.group_set, show_staff_fields=True)
        )

    async def ExplainCreate(
        self, request: gateway_pb2.ExplainCreateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ExplainCreateResponse:
        fields = Fields()
        fields.enum("kind", request.kind, common_pb2.GroupKind)
        fields.identifier("account_id", request.account_id, required=False)
        fields.done()
        principal = _explained_for(request.account_id) or self._creator(request.kind)
        check = await self._check_create(principal, request.kind, context)
        return gateway_pb2.ExplainCreateResponse(verdict=check.verdict)

    # -- reading --------------------------------------------------------------

    async def GetGroupSet(
        self, request: gateway_pb2.GetGroupSetRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetGroupSetResponse:
        require_ids(request, "group_set_id")
        found = await self.backends.group_set(request.group_set_id, context)
        staff = caller_is_staff(found)
        return gateway_pb2.GetGroupSetResponse(group_set=convert.group_set(found, show_staff_fields=staff))

    async def ListGroupSets(
        self, request: gateway_pb2.ListGroupSetsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListGroupSetsResponse:
        fields = Fields()
        fields.identifier("store_id", request.store_id, required=False)
        fields.identifier("streamer_id", request.streamer_id, required=False)
        if bool(request.store_id) == bool(request.streamer_id):
            fields.fail("store_id", "exactly one of store_id and streamer_id is required")
        fields.page_size("page_size", request.page_size)
        fields.done()
        listed = await self.backends.call(
            self.backends.groups.ListGroupSets,
            convert.convert(request, groups_pb2.ListGroupSetsRequest),
            context,
            retry=Retry.SAFE,
        )
        return gateway_pb2.ListGroupSetsResponse(
            group_sets=[convert.group_set(g, show_staff_fields=caller_is_staff(g)) for g in listed.group_sets],
            next_page_token=listed.next_page_token,
        )

    # -- joining --------------------------------------------------------------

    @staticmethod
    def _joiner() -> Principal:
        principal = current_principal()
        principal.require(Role.CONSUMER, rule_id="C12", why="only the consumer joins a group; nobody can add them")
        return principal

    @staticmethod
    def _validate_join(group_set_id: str, password: str, request_id: str = "", consumer_id: str = "") -> None:
        fields = Fields()
        fields.identifier("group_set_id", group_set_id)
        fields.text("password", password, max_chars=MAX_PASSWORD_CHARS)
        fields.identifier("request_id", request_id, required=False)
        fields.identifier("consumer_id", consumer_id, required=False)
        fields.done()

    def _eligibility_request(
        self, consumer_id: str, found: groups_pb2.GroupSet, password: str, is_staff: bool
    ) -> eligibility_pb2.CheckJoinRequest:
        return eligibility_pb2.CheckJoinRequest(
            consumer_id=consumer_id,
            kind=found.kind,
            store_id=found.store_id,
            streamer_id=found.streamer_id,
            threshold=found.threshold,
            password_digest=found.password_digest,
            supplied_password=password,
            exempt_from_score=is_staff,
        )

    async def _join_verdict(
        self,
        consumer_id: str,
        group_set_id: str,
        password: str,
        context: grpc.aio.ServicerContext,
        asked: tuple[eligibility_pb2.CheckJoinRequest, eligibility_pb2.CheckJoinResponse] | None = None,
    ) -> tuple[groups_pb2.GroupSet, eligibility_pb2.CheckJoinRequest, eligibility_pb2.CheckJoinResponse, list[Failure]]:
        """Both sides' verdicts on one join: groups state first, as it names the threshold.

        ``asked`` is an eligibility verdict already given over a kept copy of the
        set; it stands if the set's current state asks eligibility the same
        question, so a refusal costs two backend calls, not three.
        """
        state = await self.backends.call(
            self.backends.groups.CheckJoin,
            groups_pb2.CheckJoinRequest(group_set_id=group_set_id, consumer_id=consumer_id),
            context,
            retry=Retry.SAFE,
        )
        self.views.put(state.group_set)
        exempt = is_staff_account(consumer_id, state.group_set)
        question = self._eligibility_request(consumer_id, state.group_set, password, exempt)
        if asked is not None and asked[0] == question:
            eligible = asked[1]
        else:
            eligible = await self.backends.call(
                self.backends.eligibility.CheckJoin, question, context, retry=Retry.SAFE
            )
        return state.group_set, question, eligible, failures_of(state.verdict) + failures_of(eligible.verdict)

    async def JoinGroupSet(
        self, request: gateway_pb2.JoinGroupSetRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.JoinGroupSetResponse:
        """C1–C14: every failed rule at once; a consumer already in the set gets the membership they have.

        Joining is idempotent: asking again for a set one is in answers OK with
        that membership, flagged ``already_member``, whatever the rules would say
        of a new join now (members stay, C11, C3). C13 is what keeps it one
        sub-group per set: nothing is written.
        """
        self._validate_join(request.group_set_id, request.password, request.request_id)
        consumer = self._joiner()
        for attempt in range(JOIN_ATTEMPTS):
            view = self.views.get(request.group_set_id) if attempt == 0 else None
            failures: list[Failure] = []
            asked = None
            if view is not None:
                # Eligibility alone over the kept copy; groups' own rules are checked by AddMember.
                question = self._eligibility_request(
                    consumer.subject, view, request.password, is_staff_account(consumer.subject, view)
                )
                eligible = await self.backends.call(
                    self.backends.eligibility.CheckJoin, question, context, retry=Retry.SAFE
                )
                if not eligible.verdict.allowed:
                    view, asked = None, (question, eligible)  # a refusal names every failed rule (C14)
            if view is None:
                view, question, eligible, failures = await self._join_verdict(
                    consumer.subject, request.group_set_id, request.password, context, asked
                )
            # Already a member (C13): AddMember answers with the membership (or replays a request id).
            member = any(f.rule_id == ALREADY_MEMBER_RULE for f in failures)
            if failures and not member:
                for failure in failures:
                    metrics.joins.labels("refused", failure.rule_id).inc()
                raise refusal(failures)
            # C3: hidden below the bar, except the owner and super admins, who are exempt from it (C2).
            hidden = eligible.below_score_bar and not question.exempt_from_score
            try:
                added = await self.backends.call(
                    self.backends.groups.AddMember,
                    groups_pb2.AddMemberRequest(
                        request_id=request.request_id,
                        group_set_id=request.group_set_id,
                        consumer_id=consumer.subject,
                        threshold_version=view.threshold_version,
                        messages_hidden=hidden,
                    ),
                    context,
                    retry=Retry.with_request_id(request.request_id),
                )
            except Relayed as error:
                self.views.drop(request.group_set_id)
                if error.code is grpc.StatusCode.ABORTED and attempt + 1 < JOIN_ATTEMPTS:
                    continue  # the threshold changed under us: check the new one (C11)
                for failure in failures_from_status(error.status):
                    metrics.joins.labels("refused", failure.rule_id).inc()
                raise
            metrics.joins.labels("already_member" if added.already_member else "joined", "").inc()
            return gateway_pb2.JoinGroupSetResponse(
                membership=convert.membership(added.membership),
                newcomer_reply=added.newcomer_reply,
                messages_hidden=hidden,
                already_member=added.already_member,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def ExplainJoin(
        self, request: gateway_pb2.ExplainJoinRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ExplainJoinResponse:
        """X1: what JoinGroupSet would answer; for a member, allowed (their membership) and ``already_member``."""
        self._validate_join(request.group_set_id, request.password, consumer_id=request.consumer_id)
        consumer = _explained_for(request.consumer_id) or self._joiner()
        _, _, _, failures = await self._join_verdict(consumer.subject, request.group_set_id, request.password, context)
        if any(f.rule_id == ALREADY_MEMBER_RULE for f in failures):
            return gateway_pb2.ExplainJoinResponse(verdict=verdict([]), already_member=True)
        return gateway_pb2.ExplainJoinResponse(verdict=verdict(failures))

    async def LeaveGroupSet(
        self, request: gateway_pb2.LeaveGroupSetRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.LeaveGroupSetResponse:
        require_ids(request, "group_set_id")
        consumer = current_principal()
        consumer.require(Role.CONSUMER)
        await self.backends.call(
            self.backends.groups.RemoveMember,
            groups_pb2.RemoveMemberRequest(group_set_id=request.group_set_id, consumer_id=consumer.subject),
            context,
            retry=Retry.NEVER,
        )
        return gateway_pb2.LeaveGroupSetResponse()

    async def _own_page(self, request: Any, method: Any, internal: type[Message], context: Any) -> Any:
        """A page of the calling consumer's own records (``method``), asked with the public request's paging."""
        fields = Fields()
        fields.page_size("page_size", request.page_size)
        fields.done()
        consumer = current_principal()
        consumer.require(Role.CONSUMER)
        forwarded = convert.convert(request, internal, consumer_id=consumer.subject)
        return await self.backends.call(method, forwarded, context, retry=Retry.SAFE)

    async def ListMyGroups(
        self, request: gateway_pb2.ListMyGroupsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListMyGroupsResponse:
        listed = await self._own_page(
            request, self.backends.groups.ListMemberships, groups_pb2.ListMembershipsRequest, context
        )
        return convert.convert(listed, gateway_pb2.ListMyGroupsResponse)

    async def ListMyRemovals(
        self, request: gateway_pb2.ListMyRemovalsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListMyRemovalsResponse:
        """R5: the removed member reads why: which group, who decided (owner, admin, store, plan), the reason."""
        listed = await self._own_page(
            request, self.backends.groups.ListRemovals, groups_pb2.ListRemovalsRequest, context
        )
        return convert.convert(listed, gateway_pb2.ListMyRemovalsResponse)

    # -- removing (R5) --------------------------------------------------------

    async def RemoveMember(
        self, request: gateway_pb2.RemoveMemberRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RemoveMemberResponse:
        """R5: the owner or a super admin removes a member; with ``bar``, the store blacklists them too.

        Groups removes the member under the set's lock, where it also refuses an
        admin's removal of the owner or another admin. A bar is then reported to
        eligibility as the store's blacklist fact (C5 refuses a re-join, and it
        counts toward C6 like any merchant blacklist), and the consumer is
        removed from the store's other groups, as any store blacklisting does —
        which also catches a re-join between the two calls. Each step is
        idempotent, so a retry with the same ``request_id`` finishes the rest.
        """
        fields = Fields()
        fields.identifier("request_id", request.request_id, required=False)
        fields.identifier("group_set_id", request.group_set_id)
        fields.identifier("consumer_id", request.consumer_id)
        fields.text("reason", request.reason, max_chars=MAX_REASON_CHARS)
        fields.done()
        principal = current_principal()
        found = await self.backends.group_set(request.group_set_id, context)
        if is_owner(principal, found):
            cause = common_pb2.REMOVAL_CAUSE_OWNER
        elif is_staff(principal, found):
            cause = common_pb2.REMOVAL_CAUSE_ADMIN
        else:
            raise PermissionDenied("only the owner and super admins remove members", rule_id="R5")
        if request.bar and not found.store_id:
            raise InvalidArgument.one("bar", "a bar is a store's blacklist (C5); this live group has no store")
        expelled = await self.backends.call(
            self.backends.groups.ExpelMember,
            groups_pb2.ExpelMemberRequest(
                request_id=request.request_id,
                group_set_id=request.group_set_id,
                consumer_id=request.consumer_id,
                cause=cause,
                reason=request.reason,
                barred=request.bar,
            ),
            context,
            retry=Retry.with_request_id(request.request_id),
        )
        removals = [expelled.removal]
        if request.bar:
            await self.backends.call(  # an idempotent upsert
                self.backends.eligibility.IngestFacts,
                eligibility_pb2.IngestFactsRequest(facts=[merchant_blacklisting(found.store_id, request.consumer_id)]),
                context,
                retry=Retry.SAFE,
            )
            swept = await self.backends.call(  # idempotent: a consumer in none of the store's groups is no change
                self.backends.groups.RemoveFromStore,
                groups_pb2.RemoveFromStoreRequest(
                    store_id=found.store_id,
                    consumer_id=request.consumer_id,
                    cause=common_pb2.REMOVAL_CAUSE_STORE_BLACKLIST,
                    reason=request.reason,
                    barred=True,
                ),
                context,
                retry=Retry.SAFE,
            )
            removals.extend(swept.removals)
        return gateway_pb2.RemoveMemberResponse(removals=[convert.removal(r) for r in removals])

    # -- managing -------------------------------------------------------------

    async def _owned_set(self, group_set_id: str, context: grpc.aio.ServicerContext, why: str) -> groups_pb2.GroupSet:
        """R1/R2: the owner (the store's main account, or the streamer) manages admins and dissolves."""
        found = await self.backends.group_set(group_set_id, context)
        if not is_owner(current_principal(), found):
            raise PermissionDenied(why, rule_id="R2")
        return found

    @staticmethod
    def _validate_admin(request: gateway_pb2.AddAdminRequest | gateway_pb2.RemoveAdminRequest) -> None:
        require_ids(request, "group_set_id", "account_id")

    async def AddAdmin(
        self, request: gateway_pb2.AddAdminRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.AddAdminResponse:
        self._validate_admin(request)
        found = await self._owned_set(request.group_set_id, context, "only the owner appoints super admins")
        appointee = await self.backends.call(
            self.backends.eligibility.GetAccount,
            convert.convert(request, eligibility_pb2.GetAccountRequest),
            context,
            retry=Retry.SAFE,
        )
        account = appointee.account
        if found.store_id and not (
            account.role == facts_pb2.ACCOUNT_ROLE_STORE_SUB and account.store_id == found.store_id
        ):
            raise RuleRefusal(
                [
                    Failure(
                        "R2",
                        "ADMIN_NOT_SUB_ACCOUNT",
                        f"super admins are sub-accounts of store {found.store_id}; {request.account_id} is not",
                        {"account_id": request.account_id, "store_id": found.store_id},
                    )
                ]
            )
        updated = await self.backends.call(
            self.backends.groups.AddAdmin,
            convert.convert(request, groups_pb2.AddAdminRequest),
            context,
            retry=Retry.SAFE,
        )
        return gateway_pb2.AddAdminResponse(group_set=convert.group_set(updated.group_set, show_staff_fields=True))

    async def RemoveAdmin(
        self, request: gateway_pb2.RemoveAdminRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RemoveAdminResponse:
        self._validate_admin(request)
        await self._owned_set(request.group_set_id, context, "only the owner removes super admins")
        updated = await self.backends.call(
            self.backends.groups.RemoveAdmin,
            convert.convert(request, groups_pb2.RemoveAdminRequest),
            context,
            retry=Retry.NEVER,
        )
        return gateway_pb2.RemoveAdminResponse(group_set=convert.group_set(updated.group_set, show_staff_fields=True))

    async def UpdateGroupSetSettings(
        self, request: gateway_pb2.UpdateGroupSetSettingsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.UpdateGroupSetSettingsResponse:
        require_ids(request, "group_id")
        principal = current_principal()
        if not request.group_id.startswith(SUB_GROUP_PREFIX):
            # A sub-group id goes straight to groups, which refuses it (R3) without changes.
            found = await self.backends.group_set(request.group_id, context)
            if not is_staff(principal, found):
                raise PermissionDenied("only the owner and super admins edit settings", rule_id="R2")
        forwarded = groups_pb2.UpdateSettingsRequest(group_id=request.group_id)
        for name in ("announcement", "newcomer_reply", "is_public", "name"):
            if request.HasField(name):
                setattr(forwarded, name, getattr(request, name))
        if request.HasField("threshold"):
            forwarded.threshold.CopyFrom(request.threshold)
        updated = await self.backends.call(self.backends.groups.UpdateSettings, forwarded, context, retry=Retry.SAFE)
        return gateway_pb2.UpdateGroupSetSettingsResponse(
            group_set=convert.group_set(updated.group_set, show_staff_fields=True)
        )

    async def DissolveGroupSet(
        self, request: gateway_pb2.DissolveGroupSetRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DissolveGroupSetResponse:
        require_ids(request, "group_set_id")
        await self._owned_set(request.group_set_id, context, "admins cannot dissolve a group; only the owner can")
        await self.backends.call(
            self.backends.groups.DissolveGroupSet,
            convert.convert(request, groups_pb2.DissolveGroupSetRequest),
            context,
            retry=Retry.NEVER,
        )
        return gateway_pb2.DissolveGroupSetResponse()

    async def SetGroupLevel(
        self, request: gateway_pb2.SetGroupLevelRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SetGroupLevelResponse:
        current_principal().require(Role.OPS)
        await self.backends.call(
            self.backends.groups.SetGroupLevel,
            convert.convert(request, groups_pb2.SetGroupLevelRequest),
            context,
            retry=Retry.SAFE,
        )
        return gateway_pb2.SetGroupLevelResponse()


def merchant_blacklisting(store_id: str, consumer_id: str) -> facts_pb2.Fact:
    """The store's blacklist entry a bar adds (C5), as an upstream system would report it."""
    return facts_pb2.Fact(
        blacklist=facts_pb2.BlacklistFact(
            scope=facts_pb2.BLACKLIST_SCOPE_MERCHANT, store_id=store_id, consumer_id=consumer_id, listed=True
        )
    )


# Something to do once a batch of facts is applied: called with the facts and the caller's context.
