"""``python -m deploy.healthcheck [PORT]``: exit 0 when the process on this host reports SERVING.

The container health check of the compose file (Kubernetes uses its native
gRPC probe instead). PORT defaults to ``QUN_GRPC_PORT``. It asks the standard
``grpc.health.v1.Health`` service for the whole server (service ""), which is
NOT_SERVING while the process starts and while it drains after SIGTERM.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.tls import tls_from_env

TIMEOUT_SECONDS = 2.0


def check(address: str, timeout: float = TIMEOUT_SECONDS) -> tuple[bool, str]:
    """Asks over TLS with the process's own client certificate when TLS is configured (a backend serves
    that way), else, or when that finds no TLS port (the gateway's public one), in plaintext."""
    tls = tls_from_env(dict(os.environ))
    if tls is not None:
        healthy, message = _ask(
            grpc.secure_channel(address, tls.channel_credentials(), options=tls.channel_options()), address, timeout
        )
        if healthy or "UNAVAILABLE" not in message:
            return healthy, message
    return _ask(grpc.insecure_channel(address), address, timeout)


def _ask(channel: grpc.Channel, address: str, timeout: float) -> tuple[bool, str]:
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError as error:
            return False, f"{address}: {error.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port = args[0] if args else os.environ.get("QUN_GRPC_PORT", "")
    if not port.isdigit():
        print("usage: python -m deploy.healthcheck PORT (or set QUN_GRPC_PORT)", file=sys.stderr)
        return 2
    healthy, message = check(f"127.0.0.1:{port}")
    print(message)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
