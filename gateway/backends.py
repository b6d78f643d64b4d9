"""Every backend the gateway's public services call, and the one way they call them.

Each servicer takes the same ``Backends`` and calls through it in one of
three styles, so no servicer builds a stub or sets a deadline itself:

- ``call``: a unary call within what is left of the caller's deadline, with
  an explicit retry policy (``Retry.SAFE`` for reads, idempotent upserts and
  mutations carrying a ``request_id``; ``Retry.NEVER`` for a mutation that
  must not be repeated blindly);
- ``stream``: a server stream within the caller's deadline (or a longer
  budget the caller names), a backend's refusal relayed, cancelled when the
  reader stops;
- ``best_effort``: work the caller does not wait on for its answer (a P4
  notice, a draft's clean-up), within the configured budget, not retried.

Refusals reach the gateway's caller with their code, message and details
unchanged (``gateway.downstream.Relayed``).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from gateway.downstream import MIN_DEADLINE_SECONDS, Downstream, Relayed
from qun.campaigns.v1 import campaigns_pb2_grpc
from qun.eligibility.v1 import eligibility_pb2, eligibility_pb2_grpc
from qun.groups.v1 import groups_pb2, groups_pb2_grpc, lifecycle_pb2_grpc
from qun.push.v1 import push_pb2_grpc

Response = TypeVar("Response")
M = TypeVar("M", bound=Message)


class Retry(enum.Enum):
    """Whether a call may be repeated when its backend is UNAVAILABLE."""

    SAFE = "safe"  # a read, an idempotent upsert, a mutation carrying a request_id
    NEVER = "never"  # a mutation that must not be repeated blindly

    @classmethod
    def with_request_id(cls, request_id: str) -> Retry:
        """A mutation is safe to repeat when it names a request_id (the backend answers a repeat with the first
        answer, ADR 0001), and never otherwise."""
        return cls.SAFE if request_id else cls.NEVER


class Backends:
    """The stubs of every backend, and the call policy every public servicer uses."""

    def __init__(
        self,
        *,
        eligibility: eligibility_pb2_grpc.EligibilityServiceStub,
        groups: groups_pb2_grpc.GroupsServiceStub,
        lifecycle: lifecycle_pb2_grpc.GroupLifecycleServiceStub,
        campaigns: campaigns_pb2_grpc.CampaignsServiceStub,
        push: push_pb2_grpc.PushServiceStub,
        downstream: Downstream,
    ) -> None:
        self.eligibility = eligibility
        self.groups = groups
        self.lifecycle = lifecycle
        self.campaigns = campaigns
        self.push = push
        self.downstream = downstream

    async def call(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Any,
        context: grpc.aio.ServicerContext,
        *,
        retry: Retry,
    ) -> Response:
        """One unary call within what is left of the caller's deadline."""
        return await self.downstream.within(context, method, request, safe=retry is Retry.SAFE)

    async def stream(
        self,
        method: Callable[..., Any],
        request: Any,
        context: grpc.aio.ServicerContext,
        *,
        budget: float | None = None,
    ) -> AsyncIterator[Any]:
        """A server stream's messages, within the caller's deadline (and ``budget`` seconds, when given)."""
        limits = [limit for limit in (context.time_remaining(), budget) if limit is not None]
        # With neither, a stream that follows (StreamDeliveries) runs for as long as its reader reads it.
        timeout = max(MIN_DEADLINE_SECONDS, min(limits)) if limits else None
        call = method(request, timeout=timeout)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as error:
            raise Relayed.from_rpc_error(error) from None
        finally:
            call.cancel()

    async def best_effort(self, method: Callable[..., Awaitable[Response]], request: Any) -> Response:
        """A call the caller does not wait on for its answer: the configured budget, no retry."""
        return await self.downstream.call(method, request, safe=False)

    # -- reads more than one servicer makes --------------------------------------------------------

    async def group_set(self, group_set_id: str, context: grpc.aio.ServicerContext) -> groups_pb2.GroupSet:
        reply: groups_pb2.GetGroupSetResponse = await self.call(
            self.groups.GetGroupSet, groups_pb2.GetGroupSetRequest(group_set_id=group_set_id), context, retry=Retry.SAFE
        )
        return reply.group_set

    async def join_verdict(
        self, consumer_id: str, group_set: groups_pb2.GroupSet, context: grpc.aio.ServicerContext
    ) -> eligibility_pb2.CheckJoinResponse:
        return await self.call(
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
            retry=Retry.SAFE,
        )
