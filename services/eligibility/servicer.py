"""The gRPC edge of the eligibility service: validated input (``convert``), one transaction per RPC.

Refusals of a check are verdicts, not errors; unknown accounts are NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy.exc import DBAPIError

from qun.common.v1 import facts_pb2, groups_pb2
from qun.eligibility.v1 import eligibility_pb2, eligibility_pb2_grpc
from services.common import errors
from services.common.clock import Clock
from services.common.db import Database
from services.common.messages import message_from
from services.common.rules import Rules
from services.common.validation import Fields, require_ids
from services.eligibility import metrics
from services.eligibility import rules as domain_rules
from services.eligibility.convert import (
    AUDIENCES,
    KINDS,
    PLATFORM_PROTOS,
    account_to_proto,
    parse_facts,
    parse_join,
    parse_threshold,
    push_facts_to_proto,
)
from services.eligibility.domain import GroupKind
from services.eligibility.ingestion import Escalation, Ingestion
from services.eligibility.push_facts import PushFactsReads
from services.eligibility.verdicts import VerdictReads

T = TypeVar("T")
log = logging.getLogger("qun.eligibility")

# Deadlocks and serialisation failures on PostgreSQL: the batch is retried whole.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
MAX_ATTEMPTS = 4
AUDIENCE_CHUNK = 5000  # recipients per StreamPushAudience message (~100 KB)
MAX_AUDIENCE_CHUNK = 20_000


class EligibilityServiceServicer(eligibility_pb2_grpc.EligibilityServiceServicer):
    def __init__(self, db: Database, rules: Rules, clock: Clock) -> None:
        self.db = db
        self.rules = rules
        self.clock = clock

    async def IngestFacts(
        self, request: eligibility_pb2.IngestFactsRequest, context: grpc.aio.ServicerContext
    ) -> eligibility_pb2.IngestFactsResponse:
        now = self.clock.now()
        facts = parse_facts(request.facts, now, self.rules.bounds)
        escalations: list[Escalation] = []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.db.transaction() as session:
                    escalations = await Ingestion(session, self.rules).ingest(facts, now)
                break
            except DBAPIError as error:
                sqlstate = getattr(error.orig, "sqlstate", None)
                if attempt == MAX_ATTEMPTS or sqlstate not in RETRYABLE_SQLSTATES:
                    raise
                log.info("ingest retried", extra={"fields": {"attempt": attempt, "sqlstate": sqlstate}})
                await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)
        for fact in request.facts:
            metrics.facts.labels(fact.WhichOneof("fact")).inc()
        for escalation in escalations:
            metrics.escalations.labels(escalation.source.value).inc()
            log.info(
                "platform blacklisting",
                extra={
                    "fields": {
                        "rule": escalation.source.value,
                        "consumer_id": escalation.consumer_id,
                        "evidence": escalation.evidence,
                    }
                },
            )
        return eligibility_pb2.IngestFactsResponse(applied=len(facts))

    async def GetAccount(
        self, request: eligibility_pb2.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> eligibility_pb2.GetAccountResponse:
        account = await self._found(request, "account", lambda reads: reads.account(request.account_id))
        return eligibility_pb2.GetAccountResponse(account=account_to_proto(account))

    async def GetStore(
        self, request: eligibility_pb2.GetStoreRequest, context: grpc.aio.ServicerContext
    ) -> eligibility_pb2.GetStoreResponse:
        store = await self._found(request, "store", lambda reads: reads.store(request.store_id))
        return eligibility_pb2.GetStoreResponse(
            store=message_from(facts_pb2.StoreFact, store, platform=PLATFORM_PROTOS[store.platform])
        )

    async def _found(self, request: Message, kind: str, read: Callable[[VerdictReads], Awaitable[T | None]]) -> T:
        """The ``kind`` that ``read`` finds by the request's ``<kind>_id`` (checked first); NOT_FOUND if none."""
        require_ids(request, f"{kind}_id")
        record_id = getattr(request, f"{kind}_id")
        async with self.db.transaction() as session:
            found = await read(VerdictReads(session, self.rules))
        if found is None:
            raise errors.NotFound(kind, record_id)
        return found

    async def CheckCreate(
        self, request: eligibility_pb2.CheckCreateRequest, context: grpc.aio.ServicerContext
    ) -> eligibility_pb2.CheckCreateResponse:
        fields = Fields()
        account_id = fields.identifier("account_id", request.account_id)
        fields.enum("kind", request.kind, groups_pb2.GroupKind)
        fields.done()
        kind = KINDS[request.kind]
        now = self.clock.now()
        async with self.db.transaction() as session:
            facts = await VerdictReads(session, self.rules).create_facts(account_id, kind, now)
        if facts is None:
            raise errors.NotFound("account", account_id)
        decision = domain_rules.check_create(kind, facts, now, self.rules.create, self.rules.calendar.market)
        metrics.record_check("create", decision.failures)
        return eligibility_pb2.CheckCreateResponse(
            verdict=errors.verdict(decision.failures),
            owner_account_id=decision.owner_account_id,
            store_id=decision.store_id,
            streamer_id=decision.streamer_id,
            creator_becomes_admin=decision.creator_becomes_admin,
        )

    async def CheckJoin(
        self, request: eligibility_pb2.CheckJoinRequest, context: grpc.aio.ServicerContext
    ) -> eligibility_pb2.CheckJoinResponse:
        query = parse_join(request)
        now = self.clock.now()
        async with self.db.read() as connection:
            facts = await VerdictReads(connection, self.rules).join_facts(query, now)
        if facts is None:
            raise errors.NotFound("account", query.consumer_id)
        decision = domain_rules.check_join(query, facts, self.rules.join)
        metrics.record_check("join", decision.failures)
        return eligibility_pb2.CheckJoinResponse(
            verdict=errors.verdict(decision.failures), below_score_bar=decision.below_score_bar
        )

    async def WhatIfThreshold(
        self, request: eligibility_pb2.WhatIfThresholdRequest, context: grpc.aio.ServicerContext
    ) -> eligibility_pb2.WhatIfThresholdResponse:
        fields = Fields()
        fields.enum("kind", request.kind, groups_pb2.GroupKind)
        kind = KINDS.get(request.kind)
        store_id = fields.identifier("store_id", request.store_id, required=kind is GroupKind.STORE)
        streamer_id = fields.identifier("streamer_id", request.streamer_id, required=kind is GroupKind.LIVE)
        # A password counts as met by nobody (see the proto); its digest is not needed here.
        current = parse_threshold(fields, "current_threshold", request.current_threshold, "-")
        new = parse_threshold(fields, "new_threshold", request.new_threshold, "-")
        for index, member in enumerate(request.member_ids):
            fields.identifier(f"member_ids[{index}]", member)
        fields.done()
        assert kind is not None and current is not None and new is not None
        for path, threshold in (("current_threshold", current), ("new_threshold", new)):
            if not domain_rules.threshold_fits(kind, threshold):
                fields.fail(path, f"does not fit a {kind.value} group")
        fields.done()
        now = self.clock.now()
        async with self.db.transaction() as session:
            repository = VerdictReads(session, self.rules)
            known = await repository.known_consumers(store_id, streamer_id)
            meets_current = await repository.meeting(current, store_id, streamer_id, now)
            meets_new = await repository.meeting(new, store_id, streamer_id, now)
        outcome = domain_rules.what_if(set(request.member_ids), known, meets_current, meets_new)
        return eligibility_pb2.WhatIfThresholdResponse(
            members_failing=outcome.members_failing,
            newly_qualifying=outcome.newly_qualifying,
            known_consumers=outcome.known_consumers,
        )

    async def GetPushFacts(
        self, request: eligibility_pb2.GetPushFactsRequest, context: grpc.aio.ServicerContext
    ) -> eligibility_pb2.GetPushFactsResponse:
        require_ids(request, "store_id")
        store_id = request.store_id
        async with self.db.transaction() as session:
            found = await PushFactsReads(session, self.rules).push_facts(store_id, self.clock.now())
        if found is None:
            raise errors.NotFound("store", store_id)
        return push_facts_to_proto(found)

    async def StreamPushAudience(
        self, request: eligibility_pb2.StreamPushAudienceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[eligibility_pb2.StreamPushAudienceResponse]:
        fields = Fields()
        store_id = fields.identifier("store_id", request.store_id)
        fields.enum("audience", request.audience, eligibility_pb2.PushAudience)
        if request.limit < 0:
            fields.fail("limit", f"must not be negative, got {request.limit}")
        chunk = request.chunk_size or AUDIENCE_CHUNK
        fields.in_range("chunk_size", chunk, 1, MAX_AUDIENCE_CHUNK)
        fields.done()
        now = self.clock.now()
        async with self.db.transaction() as session:
            repository = PushFactsReads(session, self.rules)
            if not await repository.store_exists(store_id):
                raise errors.NotFound("store", store_id)
            async for ids in repository.push_audience(store_id, AUDIENCES[request.audience], request.limit, chunk, now):
                yield eligibility_pb2.StreamPushAudienceResponse(consumer_ids=ids)


# --- proto → domain ---------------------------------------------------------------
