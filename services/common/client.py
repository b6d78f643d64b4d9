"""Channels to backend services, carrying the internal credential, spread over every replica.

Used by the gateway and by tests that talk to a backend directly. Client-side
``grpc_client_*`` metrics and the request id travel with every call.

A target may name several replicas: ``dns:///qun-groups-pods:50053`` (a
headless Service: every pod's address), or ``ipv4:127.0.0.1:50053,127.0.0.1:50063``
locally. The channel balances calls over all of them (``round_robin``): one
sub-channel per address, each call to the next ready one, so a replica that
dies is skipped as soon as its connection drops and one that comes back is
used again. With one address it behaves as a plain channel. DNS is asked
again whenever a connection breaks; pods added to a Service are found then.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc

from services.common import metrics, tracing
from services.common.interceptors import ACTOR_HEADER, INTERNAL_TOKEN_HEADER, REQUEST_ID_HEADER, MethodInfo
from services.common.logs import actor_var, request_id_var
from services.common.tls import TlsFiles

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 0),  # retries are decided per call by the gateway
    # A backend back from a crash is tried again within a second, not after gRPC's default
    # backoff (up to two minutes), during which every call would fail fast with UNAVAILABLE.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Every address the target resolves to, in turn (SPEC: replicas share the load).
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
]


class _Unary:
    """A unary method of a backend: credential and request id added, client metrics recorded.

    A wrapper rather than a grpc.aio interceptor: an intercepted call runs its
    interceptor in a task of its own, which on the gateway's hot path costs
    more than the call's own work.
    """

    def __init__(self, inner: Any, info: MethodInfo, channel: CredentialedChannel) -> None:
        self._inner = inner
        self._series = metrics.client_series(info.labels) if channel.record_metrics else None
        self._channel = channel
        self._method = info.full_method

    async def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None, **kw: Any) -> Any:
        if tracing.recording():  # a sampled request's span (none at all when tracing is off)
            with tracing.client_span(self._method):
                return await self._call(request, timeout, metadata, **kw)
        return await self._call(request, timeout, metadata, **kw)

    async def _call(self, request: Any, timeout: float | None, metadata: Any, **kw: Any) -> Any:
        call = self._inner(request, timeout=timeout, metadata=self._channel.metadata(metadata), **kw)
        series = self._series
        if series is None:
            return await call
        series.started.inc()
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            series.seconds.observe(time.perf_counter() - start)
            series.handled(code.name).inc()


class _UnaryStream:
    """A server-streaming method of a backend, with the credential and request id."""

    def __init__(self, inner: Any, channel: CredentialedChannel) -> None:
        self._inner = inner
        self._channel = channel

    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None, **kw: Any) -> Any:
        return self._inner(request, timeout=timeout, metadata=self._channel.metadata(metadata), **kw)


class CredentialedChannel:
    """A channel whose stubs present the internal credential and pass the request id and actor on."""

    def __init__(self, channel: grpc.aio.Channel, token: str, record_metrics: bool) -> None:
        self._channel = channel
        self._token = token
        self.record_metrics = record_metrics

    def metadata(self, extra: Any = None) -> tuple[tuple[str, str], ...]:
        items = [*(extra or ()), (INTERNAL_TOKEN_HEADER, self._token)]
        request_id = request_id_var.get()
        if request_id:
            items.append((REQUEST_ID_HEADER, request_id))
        actor = actor_var.get()
        if actor:
            items.append((ACTOR_HEADER, actor))
        tracing.outgoing(items)
        return tuple(items)

    def unary_unary(self, method: str, *args: Any, **kw: Any) -> _Unary:
        return _Unary(self._channel.unary_unary(method, *args, **kw), MethodInfo.parse(method, "unary"), self)

    def unary_stream(self, method: str, *args: Any, **kw: Any) -> _UnaryStream:
        return _UnaryStream(self._channel.unary_stream(method, *args, **kw), self)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    async def __aenter__(self) -> CredentialedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        # Everything else (channel_ready, get_state, ...) is the channel's own.
        return getattr(self._channel, name)


def internal_channel(
    target: str, token: str, *, record_metrics: bool = False, tls: TlsFiles | None = None
) -> CredentialedChannel:
    """A loopback/cluster channel that presents the internal credential, over TLS with this process's
    client certificate when ``tls`` is given (``services.common.tls``)."""
    if tls is None:
        channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    else:
        options = CHANNEL_OPTIONS + tls.channel_options()
        channel = grpc.aio.secure_channel(target, tls.channel_credentials(), options=options)
    return CredentialedChannel(channel, token, record_metrics)
