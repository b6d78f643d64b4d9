"""Calls from the gateway to a backend: deadline, safe retries, errors relayed.

Every call gets a deadline (the configured budget, shortened to what is left
of the caller's own). Only UNAVAILABLE is retried, and only when the call is
safe to repeat: reads, idempotent upserts, and mutations carrying a
``request_id``. A backend's refusal reaches the gateway's caller with its
code, message and rich details unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.rpc import status_pb2

from services.common.errors import ServiceError, status_from_error

Response = TypeVar("Response")

RETRY_BACKOFF_SECONDS = (0.05, 0.2, 0.5)
MIN_DEADLINE_SECONDS = 0.05


class Relayed(ServiceError):
    """A backend's status, passed to the gateway's caller as it was."""

    def __init__(self, status: status_pb2.Status, code: grpc.StatusCode) -> None:
        super().__init__(status.message)
        self.status = status
        self.code = code

    def to_status(self) -> status_pb2.Status:
        return self.status

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> Relayed:
        code = error.code()
        status = status_from_error(error)
        if status is None:
            status = status_pb2.Status(code=code.value[0], message=error.details() or code.name.lower())
        return cls(status, code)


class Downstream:
    def __init__(self, timeout: float, attempts: int) -> None:
        self.timeout = timeout
        self.attempts = attempts

    def _deadline(self, caller_remaining: float | None) -> float:
        if caller_remaining is None:
            return self.timeout
        return max(MIN_DEADLINE_SECONDS, min(self.timeout, caller_remaining))

    async def call(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Any,
        *,
        safe: bool,
        caller_remaining: float | None = None,
    ) -> Response:
        """Calls ``method`` (a stub's bound method); relays a refusal as ``Relayed``."""
        attempts = self.attempts if safe else 1
        for attempt in range(attempts):
            try:
                return await method(request, timeout=self._deadline(caller_remaining))
            except grpc.aio.AioRpcError as error:
                last_try = attempt == attempts - 1
                if error.code() is not grpc.StatusCode.UNAVAILABLE or last_try:
                    raise Relayed.from_rpc_error(error) from None
                await asyncio.sleep(RETRY_BACKOFF_SECONDS[min(attempt, len(RETRY_BACKOFF_SECONDS) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover

    async def within(
        self, context: grpc.aio.ServicerContext, method: Callable[..., Awaitable[Response]], request: Any, *, safe: bool
    ) -> Response:
        """``call`` inside what is left of the serving call's own deadline."""
        return await self.call(method, request, safe=safe, caller_remaining=context.time_remaining())
