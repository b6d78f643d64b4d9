"""The backend stubs the gateway's public services call, with one call policy.

Every downstream call gets the caller's remaining deadline; reads and
idempotent writes may be retried on UNAVAILABLE, other writes are not
(``gateway.downstream``).
"""

from __future__ import annotations

import grpc

from gateway.downstream import Downstream
from qun.eligibility.v1 import eligibility_pb2, eligibility_pb2_grpc
from qun.groups.v1 import groups_pb2, groups_pb2_grpc, lifecycle_pb2_grpc


class Backends:
    """The stubs and call policy both public services use."""

    def __init__(
        self,
        eligibility: eligibility_pb2_grpc.EligibilityServiceStub,
        groups: groups_pb2_grpc.GroupsServiceStub,
        lifecycle: lifecycle_pb2_grpc.GroupLifecycleServiceStub,
        downstream: Downstream,
    ) -> None:
        self.eligibility = eligibility
        self.groups = groups
        self.lifecycle = lifecycle
        self.downstream = downstream

    async def call(self, method, request, context, *, safe: bool):  # type: ignore[no-untyped-def]
        """One downstream call within what is left of the caller's deadline."""
        return await self.downstream.within(context, method, request, safe=safe)

    async def read(self, method, request, context):  # type: ignore[no-untyped-def]
        """A call that is safe to retry: reads and idempotent writes."""
        return await self.call(method, request, context, safe=True)

    async def write(self, method, request, context):  # type: ignore[no-untyped-def]
        """A call that must not be repeated blindly."""
        return await self.call(method, request, context, safe=False)

    async def group_set(self, group_set_id: str, context: grpc.aio.ServicerContext) -> groups_pb2.GroupSet:
        reply = await self.read(
            self.groups.GetGroupSet, groups_pb2.GetGroupSetRequest(group_set_id=group_set_id), context
        )
        return reply.group_set

    async def join_verdict(
        self, consumer_id: str, group_set: groups_pb2.GroupSet, context: grpc.aio.ServicerContext
    ) -> eligibility_pb2.CheckJoinResponse:
        return await self.read(
            self.eligibility.CheckJoin,
            eligibility_pb2.CheckJoinRequest(
                consumer_id=consumer_id,
                kind=group_set.kind,
                store_id=group_set.store_id,
                streamer_id=group_set.streamer_id,
                threshold=group_set.threshold,
                password_digest=group_set.password_digest,
            ),
            context,
        )
