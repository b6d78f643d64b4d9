"""The public FactService: upstream systems report facts; the flows that follow from them are observers.

Facts go to eligibility, which owns them. What follows from a batch is an
observer the service is composed with (``gateway.app``): a store's
blacklisting removes the consumer from its groups (R5,
``StoreBlacklistRemovals``), facts that can earn a recall chance pass the
store's figures to push (P4, ``gateway.push.RecallNotices``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc

from gateway.auth import Role, current_principal
from gateway.backends import Backends, Retry
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.eligibility.v1 import eligibility_pb2
from qun.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from qun.groups.v1 import groups_pb2

STORE_BLACKLIST_REASON = "on the store's blacklist (C5)"
BLACKLIST_SWEEPS_AT_ONCE = 16  # stores × consumers of one fact batch removed concurrently

FactObserver = Callable[[Sequence[facts_pb2.Fact], grpc.aio.ServicerContext], Awaitable[None]]


class FactService(gateway_pb2_grpc.FactServiceServicer):
    """Upstream systems report facts; the eligibility service validates and keeps them.

    Flows that follow from facts (a store's blacklisting removes the consumer
    from its groups, R5) are observers, called in turn once the batch is
    applied; an observer's failure fails the call, and the caller's retry
    (every fact is an idempotent upsert) runs it again.
    """

    def __init__(self, backends: Backends, observers: Sequence[FactObserver] = ()) -> None:
        self.backends = backends
        self.observers = tuple(observers)

    async def ReportFacts(
        self, request: gateway_pb2.ReportFactsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ReportFactsResponse:
        current_principal().require(Role.UPSTREAM)
        ingested = await self.backends.call(
            self.backends.eligibility.IngestFacts,
            eligibility_pb2.IngestFactsRequest(facts=request.facts),
            context,
            retry=Retry.SAFE,  # every fact is an idempotent upsert
        )
        for observer in self.observers:
            await observer(request.facts, context)
        return gateway_pb2.ReportFactsResponse(applied=ingested.applied)


class StoreBlacklistRemovals:
    """R5: a store blacklisting a consumer (a merchant ``BlacklistFact``, listed) removes them from its groups.

    A platform blacklisting (C4, C6, C7) removes nobody: SPEC speaks of the
    store's own blacklist; such a consumer cannot join any group again.
    """

    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    async def __call__(self, facts: Sequence[facts_pb2.Fact], context: grpc.aio.ServicerContext) -> None:
        listed = {
            (f.blacklist.store_id, f.blacklist.consumer_id)
            for f in facts
            if f.WhichOneof("fact") == "blacklist"
            and f.blacklist.listed
            and f.blacklist.scope == facts_pb2.BLACKLIST_SCOPE_MERCHANT
            and f.blacklist.store_id
        }
        pairs = sorted(listed)
        for start in range(0, len(pairs), BLACKLIST_SWEEPS_AT_ONCE):
            await asyncio.gather(
                *(
                    self._sweep(store, consumer, context)
                    for store, consumer in pairs[start : start + BLACKLIST_SWEEPS_AT_ONCE]
                )
            )

    async def _sweep(self, store_id: str, consumer_id: str, context: grpc.aio.ServicerContext) -> None:
        await self.backends.call(  # idempotent: a consumer in none of the store's groups is no change
            self.backends.groups.RemoveFromStore,
            groups_pb2.RemoveFromStoreRequest(
                store_id=store_id,
                consumer_id=consumer_id,
                cause=common_pb2.REMOVAL_CAUSE_STORE_BLACKLIST,
                reason=STORE_BLACKLIST_REASON,
                barred=True,
            ),
            context,
            retry=Retry.SAFE,
        )
