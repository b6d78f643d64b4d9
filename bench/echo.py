"""The baseline: a minimal unary echo service on the same runtime as every qun process.

Same ``Server`` (interceptors: metrics, logging, credential, errors), same
health and reflection; the handler returns its request. Whatever this
reaches on the machine is the limit every flow is divided by.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from services.common.server import ServiceApp, main

SERVICE = "qun.bench.v1.EchoService"
METHOD = f"/{SERVICE}/Echo"


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


class EchoApp(ServiceApp):
    name = "echo"

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        handler = grpc.unary_unary_rpc_method_handler(echo)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler})])
        return [SERVICE]


if __name__ == "__main__":
    main(EchoApp)
