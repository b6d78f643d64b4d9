"""Channels to backend services, carrying the internal credential.

Used by the gateway and by tests that talk to a backend directly. Client-side
``grpc_client_*`` metrics and the request id travel with every call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from services.common import metrics
from services.common.interceptors import ACTOR_HEADER, INTERNAL_TOKEN_HEADER, REQUEST_ID_HEADER, MethodInfo
from services.common.logs import actor_var, request_id_var

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 0),  # retries are decided per call by the gateway
    # A backend back from a crash is tried again within a second, not after gRPC's default
    # backoff (up to two minutes), during which every call would fail fast with UNAVAILABLE.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class _Metadata(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str, record_metrics: bool) -> None:
        self._token = token
        self._record = record_metrics
        self._infos: dict[str, MethodInfo] = {}

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(INTERNAL_TOKEN_HEADER, self._token)
        request_id = request_id_var.get()
        if request_id:
            metadata.add(REQUEST_ID_HEADER, request_id)
        actor = actor_var.get()
        if actor:
            metadata.add(ACTOR_HEADER, actor)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    def _info(self, method: str | bytes, rpc_type: str) -> MethodInfo:
        name = method.decode() if isinstance(method, bytes) else method
        info = self._infos.get(name)
        if info is None:
            info = self._infos[name] = MethodInfo.parse(name, rpc_type)
        return info

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        if not self._record:
            return await continuation(self._details(details), request)
        info = self._info(details.method, "unary")
        metrics.client_started.labels(*info.labels).inc()
        start = time.perf_counter()
        call = await continuation(self._details(details), request)
        try:
            code = await call.code()
        finally:
            metrics.client_handling_seconds.labels(*info.labels).observe(time.perf_counter() - start)
        metrics.client_handled.labels(*info.labels, code.name).inc()
        return call

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamMetadata(grpc.aio.UnaryStreamClientInterceptor):
    """The credential on server-streaming calls too.

    grpc.aio files each interceptor under the first call type it implements,
    so ``_Metadata`` alone is never asked about unary-stream calls.
    """

    def __init__(self, unary: _Metadata) -> None:
        self._unary = unary

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await self._unary.intercept_unary_stream(continuation, details, request)


def internal_channel(target: str, token: str, *, record_metrics: bool = False) -> grpc.aio.Channel:
    """An insecure loopback/cluster channel that presents the internal credential."""
    unary = _Metadata(token, record_metrics)
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=[unary, _StreamMetadata(unary)])
