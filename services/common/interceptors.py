"""Server interceptors, outermost first: metrics → logging → auth → (guards) → errors.

Each wraps the unary and server-streaming handlers of the services it guards.
Health and reflection pass through untouched (probes need no credential).
Wrapped handlers are cached per method, so a call pays for the wrapping once.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status

from services.common import metrics, tracing
from services.common.errors import InvalidArgument, ServiceError, Unauthenticated, refusal_rules
from services.common.logs import current_ids, request_id_or_new, request_id_var

log = logging.getLogger("qun.rpc")

INTERNAL_TOKEN_HEADER = "x-qun-internal-token"
REQUEST_ID_HEADER = "x-request-id"
ACTOR_HEADER = "x-qun-actor"
EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Streaming = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


@dataclass(frozen=True)
class MethodInfo:
    full_method: str
    service: str
    method: str
    rpc_type: str

    @classmethod
    def parse(cls, full_method: str, rpc_type: str) -> MethodInfo:
        service, _, method = full_method.lstrip("/").partition("/")
        return cls(full_method, service, method, rpc_type)

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.service, self.method, self.rpc_type)


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            value = item.value
            return value.decode() if isinstance(value, bytes) else value
    return ""


class Interceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types (ADR 0010)
    """Base: subclasses override ``around`` (unary) and may override ``around_stream``."""

    def __init__(self) -> None:
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        name = handler_call_details.method
        if handler is None or name.startswith(EXEMPT_PREFIXES):
            return handler
        cached = self._cache.get(name)
        if cached is None:
            cached = self._cache[name] = self._wrap(name, handler)
        return cached

    def _wrap(self, name: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        deserializer = tolerant_deserializer(handler.request_deserializer)
        if handler.unary_unary is not None:
            info = MethodInfo.parse(name, "unary")
            inner: Unary = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                return await self.around(info, request, context, inner)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            info = MethodInfo.parse(name, "server_stream")
            inner_stream: Streaming = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async for item in self.around_stream(info, request, context, inner_stream):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def around(self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Unary) -> Any:
        return await call(request, context)

    async def around_stream(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Streaming
    ) -> AsyncIterator[Any]:
        # Default: run the unary hook around the whole stream's setup.
        async def collect(req: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            return call(req, ctx)

        iterator = await self.around(info, request, context, collect)
        async for item in iterator:
            yield item


class GateInterceptor(Interceptor):
    """Base of the checks that admit or refuse a call before it runs (``admit`` aborts to refuse), streams alike."""

    async def admit(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        raise NotImplementedError

    async def around(self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Unary) -> Any:
        await self.admit(request, context)
        return await call(request, context)

    async def around_stream(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Streaming
    ) -> AsyncIterator[Any]:
        await self.admit(request, context)
        async for item in call(request, context):
            yield item


class MalformedRequest:
    """Stands for a request body that did not decode; the error interceptor refuses it."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def tolerant_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A body that fails to decode becomes a ``MalformedRequest`` instead of an exception.

    grpc answers a deserializer's exception with INTERNAL/UNKNOWN and logs a
    traceback; a client's garbage is its own error, so the error interceptor
    turns the marker into INVALID_ARGUMENT after authentication.
    """
    if deserializer is None or getattr(deserializer, "_qun_tolerant", False):
        return deserializer

    def deserialize(body: bytes) -> Any:
        try:
            return deserializer(body)
        except Exception as error:  # noqa: BLE001 - any decode failure is the client's
            return MalformedRequest(type(error).__name__)

    deserialize._qun_tolerant = True  # type: ignore[attr-defined]  # a mark on the function, read back below
    return deserialize


def malformed(request: Any) -> InvalidArgument | None:
    if isinstance(request, MalformedRequest):
        return InvalidArgument.one("body", f"malformed request body ({request.error})")
    return None


def _code_of(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc versions report the raw integer
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate
    return grpc.StatusCode.UNKNOWN


class MetricsInterceptor(Interceptor):
    def __init__(self) -> None:
        super().__init__()
        self._series: dict[str, metrics.MethodSeries] = {}

    def _method(self, info: MethodInfo) -> metrics.MethodSeries:
        series = self._series.get(info.full_method)
        if series is None:
            series = self._series[info.full_method] = metrics.server_series(info.labels)
        return series

    @contextlib.contextmanager
    def _observed(self, info: MethodInfo, context: grpc.aio.ServicerContext, failed: grpc.StatusCode) -> Iterator[None]:
        """Counts the call and times it; an exception without a status of its own counts as ``failed``."""
        series = self._method(info)
        series.started.inc()
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            yield
        except BaseException:
            code = _code_of(context)
            if code is grpc.StatusCode.OK:
                code = failed
            raise
        finally:
            series.seconds.observe(time.perf_counter() - start)
            series.handled(code.name).inc()

    async def around(self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Unary) -> Any:
        with self._observed(info, context, grpc.StatusCode.UNKNOWN):
            return await call(request, context)

    async def around_stream(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Streaming
    ) -> AsyncIterator[Any]:
        with self._observed(info, context, grpc.StatusCode.CANCELLED):
            async for item in call(request, context):
                yield item


class LoggingInterceptor(Interceptor):
    """Binds the request id (from ``x-request-id`` or new) and the call's trace (``services.common.tracing``),
    and logs each outcome.

    Successful calls log at DEBUG; refusals and failures at INFO, so a busy
    service's log holds what someone will ask about. With ``answer_ids`` (the
    gateway: the public API) every answer's metadata carries the request id and
    the trace id, so a caller who gets an error has something to quote.
    """

    def __init__(self, *, answer_ids: bool = False) -> None:
        super().__init__()
        self.answer_ids = answer_ids

    async def around(self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Unary) -> Any:
        request_id = request_id_or_new(metadata_value(context, REQUEST_ID_HEADER))
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        try:
            with tracing.server_span(info.full_method, context.invocation_metadata()) as span:
                if self.answer_ids:
                    await context.send_initial_metadata(self._ids(request_id))
                try:
                    response = await call(request, context)
                except BaseException:
                    code = _code_of(context)
                    tracing.answered(span, code.name, code.value[0])
                    log.info("rpc", extra={"fields": self._fields(info, code.name, start)})
                    raise
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("rpc", extra={"fields": self._fields(info, "OK", start)})
                return response
        finally:
            request_id_var.reset(token)

    @staticmethod
    def _ids(request_id: str) -> tuple[tuple[str, str], ...]:
        trace_id, _ = current_ids()
        if trace_id:
            return ((REQUEST_ID_HEADER, request_id), (tracing.TRACE_ID_HEADER, trace_id))
        return ((REQUEST_ID_HEADER, request_id),)

    @staticmethod
    def _fields(info: MethodInfo, code: str, start: float) -> dict[str, object]:
        return {
            "method": info.full_method,
            "code": code,
            "ms": round((time.perf_counter() - start) * 1000, 2),
        }


class InternalAuthInterceptor(Interceptor):
    """Backends accept only calls that carry the internal service credential."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token.encode()

    async def around(self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Unary) -> Any:
        presented = metadata_value(context, INTERNAL_TOKEN_HEADER).encode()
        if not hmac.compare_digest(presented, self._token):
            await abort_with(context, Unauthenticated("missing or wrong internal service credential"))
        return await call(request, context)


async def abort_with(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    await context.abort_with_status(rpc_status.to_status(error.to_status()))


class ErrorInterceptor(Interceptor):
    """Expected refusals become rich statuses; anything else is a bug: INTERNAL, counted."""

    async def around(self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Unary) -> Any:
        async with self._answered(info, request, context):
            return await call(request, context)
        raise AssertionError("unreachable: a failed call is aborted")  # pragma: no cover

    async def around_stream(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call: Streaming
    ) -> AsyncIterator[Any]:
        async with self._answered(info, request, context):
            async for item in call(request, context):
                yield item

    @contextlib.asynccontextmanager
    async def _answered(self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Refuses a malformed request; a refusal becomes its rich status, anything else INTERNAL (counted, logged)."""
        try:
            refusal = malformed(request)
            if refusal is not None:
                raise refusal
            yield
        except ServiceError as error:
            if tracing.recording():  # the rules are read off the refusal only for a span that keeps them
                tracing.refused(refusal_rules(error))
            await abort_with(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception:
            metrics.internal_errors.labels(info.service, info.method).inc()
            log.exception("unexpected error", extra={"fields": {"method": info.full_method}})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
