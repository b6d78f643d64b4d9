"""Fake backend clients for the gateway's servicers: no processes, no channels.

``backends(eligibility=…, push=…)`` builds the one ``Backends`` every
servicer takes, with the fakes given and, for every other backend, one that
fails the test when called. A fake method is any ``async (request, timeout)``
callable; ``Scripted`` answers from a list and records what it was sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import grpc
from grpc.aio import AioRpcError, Metadata

from gateway.auth import Principal, principal_var
from gateway.backends import Backends
from gateway.downstream import Downstream

BACKENDS = ("eligibility", "groups", "lifecycle", "campaigns", "push")


def rpc_error(code: grpc.StatusCode, details: str = "") -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details=details or code.name.lower())


class Absent:
    """A backend the test does not expect to be called."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, method: str) -> Any:
        raise AssertionError(f"unexpected call to the {self.name} backend: {method}")


class Scripted:
    """A unary method answering each call with the next of ``outcomes`` (an exception is raised)."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[Any] = []
        self.timeouts: list[float | None] = []

    async def __call__(self, request: Any, timeout: float | None = None) -> Any:
        self.requests.append(request)
        self.timeouts.append(timeout)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class StreamCall:
    """What a server-streaming stub returns: an async iterator that can be cancelled."""

    def __init__(self, messages: Iterable[Any], error: AioRpcError | None) -> None:
        self.messages = list(messages)
        self.error = error
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        for message in self.messages:
            yield message
        if self.error is not None:
            raise self.error

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class Streaming:
    """A server-streaming method: each call streams ``messages`` then raises ``error`` when given."""

    def __init__(self, messages: Iterable[Any], error: AioRpcError | None = None) -> None:
        self.messages = list(messages)
        self.error = error
        self.calls: list[StreamCall] = []
        self.timeouts: list[float | None] = []

    def __call__(self, request: Any, timeout: float | None = None) -> StreamCall:
        self.timeouts.append(timeout)
        call = StreamCall(self.messages, self.error)
        self.calls.append(call)
        return call


class Stub:
    """A backend whose methods are the given fakes."""

    def __init__(self, **methods: Any) -> None:
        self.__dict__.update(methods)


class Context:
    """The part of a servicer context the gateway's servicers read."""

    def __init__(self, remaining: float | None = 5.0) -> None:
        self.remaining = remaining
        self.aborted: Any = None

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort_with_status(self, status: Any) -> None:
        self.aborted = status
        raise RuntimeError("aborted")


def backends(*, timeout: float = 1.0, attempts: int = 3, **stubs: Any) -> Backends:
    """The gateway's ``Backends`` over the given fakes; every other backend fails the test when called."""
    chosen = {name: stubs.pop(name, None) or Absent(name) for name in BACKENDS}
    if stubs:
        raise TypeError(f"no such backend: {', '.join(stubs)}")
    return Backends(**chosen, downstream=Downstream(timeout=timeout, attempts=attempts))


@contextlib.contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Runs the block as ``principal``, as the bearer-token interceptor binds one for a call."""
    token = principal_var.set(principal)
    try:
        yield
    finally:
        principal_var.reset(token)
