"""The baselines: a minimal unary echo service on the same runtime as every qun process, and a proxy.

Same ``Server`` (interceptors: metrics, logging, credential, errors), same
health and reflection; the echo handler returns its request. Whatever the echo
reaches on the machine is the limit every flow is divided by.

With ``QUN_BENCH_HOPS`` set, the process is instead a proxy in front of the
echo service at ``QUN_BENCH_ECHO_TARGET``: each call makes that many calls to
it, one after another, over the channel the gateway uses for its backends. It
does nothing else, so it measures the limit of a flow that needs that many
backend calls, against which the gateway's flows are read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import grpc

from services.common.client import CredentialedChannel, internal_channel
from services.common.server import ServiceApp, main

SERVICE = "qun.bench.v1.EchoService"
METHOD = f"/{SERVICE}/Echo"
HOPS_ENV = "QUN_BENCH_HOPS"
TARGET_ENV = "QUN_BENCH_ECHO_TARGET"
HOP_TIMEOUT_SECONDS = 10.0


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


class EchoApp(ServiceApp):
    name = "echo"

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        handler = grpc.unary_unary_rpc_method_handler(echo)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler})])
        return [SERVICE]


class EchoProxyApp(ServiceApp):
    """The echo method, answered by calling the echo service ``QUN_BENCH_HOPS`` times in turn."""

    name = "echo-proxy"
    channel: CredentialedChannel | None = None

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        hops = int(os.environ[HOPS_ENV])
        # As the gateway's backend channels: the internal credential, client metrics recorded.
        self.channel = internal_channel(os.environ[TARGET_ENV], self.settings.internal_token, record_metrics=True)
        downstream = self.channel.unary_unary(METHOD)

        async def proxy(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            answer = request
            for _ in range(hops):
                answer = await downstream(request, timeout=HOP_TIMEOUT_SECONDS)
            return answer

        handler = grpc.unary_unary_rpc_method_handler(proxy)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler})])
        return [SERVICE]

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()


if __name__ == "__main__":
    main(EchoProxyApp if os.environ.get(HOPS_ENV) else EchoApp)
