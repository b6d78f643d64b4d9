"""The gateway's guards in-process: malformed bodies and per-principal rate limits.

No backend runs: every call here is decided before the gateway calls one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from prometheus_client import REGISTRY

from gateway.app import GatewayApp
from gateway.auth import Principal, Role, mint_token
from gateway.keys import SharedSecret
from gateway.settings import GatewaySettings
from qun.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common.errors import error_info, field_violations, status_from_error
from services.common.rules import Rules, load_rules
from services.common.server import Server
from tests.support.inprocess import settings_for

SECRET = "guard-test-secret-0123456789abcdef"
SET_LEVEL = "/qun.gateway.v1.GroupService/SetGroupLevel"
GARBAGE = [b"\xff", b"\x0a\xff\xff\xff\xff\xff", b"\x08" + b"\xff" * 11, bytes(range(256))]


@asynccontextmanager
async def gateway(rules: Rules) -> AsyncIterator[grpc.aio.Channel]:
    base = settings_for("gateway")
    unreachable = "127.0.0.1:9"
    config = GatewaySettings(base, SharedSecret(SECRET), unreachable, unreachable, unreachable, unreachable, 0.2, 1)
    server = Server(GatewayApp(base, rules, gateway_settings=config), serve_metrics_http=False)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop()


def bearer(principal: Principal) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_token(SECRET, principal)}"),)


async def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_body_that_does_not_decode_is_invalid_argument_not_internal(rules: Rules) -> None:
    async with gateway(rules) as channel:
        raw = channel.unary_unary(SET_LEVEL)
        ops = bearer(Principal("ops1", Role.OPS))
        for body in GARBAGE:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await raw(body, metadata=ops, timeout=5)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, body
            assert [v.field for v in field_violations(status_from_error(refused.value))] == ["body"]
            # Authentication still comes first: garbage without a token is UNAUTHENTICATED.
            assert await code_of(raw(body, timeout=5)) is grpc.StatusCode.UNAUTHENTICATED
        # The process keeps serving well-formed calls.
        stub = gateway_pb2_grpc.GroupServiceStub(channel)
        consumer = bearer(Principal("c1", Role.CONSUMER))
        call = stub.SetGroupLevel(gateway_pb2.SetGroupLevelRequest(), metadata=consumer, timeout=5)
        assert await code_of(call) is grpc.StatusCode.PERMISSION_DENIED


def limited(rules: Rules, **limits: int) -> Rules:
    return dataclasses.replace(rules, abuse=dataclasses.replace(rules.abuse, **limits))


def rate_limited(role: str) -> float:
    return REGISTRY.get_sample_value("qun_gateway_rate_limited_total", {"role": role}) or 0.0


async def test_a_rules_override_throttles_a_principal_and_it_recovers(tmp_path: Path) -> None:
    override = tmp_path / "rules.toml"
    override.write_text("[abuse]\nconsumer_rate = 1\nconsumer_burst = 3\n")
    rules = load_rules(override)
    async with gateway(rules) as channel:
        stub = gateway_pb2_grpc.GroupServiceStub(channel)
        alice, bob = bearer(Principal("alice", Role.CONSUMER)), bearer(Principal("bob", Role.CONSUMER))
        ops = bearer(Principal("ops1", Role.OPS))

        def call(metadata):  # type: ignore[no-untyped-def]
            # Decided in the gateway: consumers may not set levels.
            return stub.SetGroupLevel(gateway_pb2.SetGroupLevelRequest(), metadata=metadata, timeout=5)

        before = rate_limited("consumer")
        codes = [await code_of(call(alice)) for _ in range(3)]
        assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 3
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(alice)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        status = status_from_error(refused.value)
        assert status is not None and error_info(status).reason == "RATE_LIMITED"  # type: ignore[union-attr]
        retry = error_details_pb2.RetryInfo()
        assert any(d.Unpack(retry) for d in status.details if d.Is(retry.DESCRIPTOR))
        delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        assert 0 < delay <= 1.0 + 1e-6
        assert rate_limited("consumer") == before + 1
        # Others are not affected: another consumer, and ops with their own (default) limit.
        assert await code_of(call(bob)) is grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(call(ops)) is not grpc.StatusCode.RESOURCE_EXHAUSTED
        # After the advertised delay the principal is served again.
        await asyncio.sleep(delay + 0.05)
        assert await code_of(call(alice)) is grpc.StatusCode.PERMISSION_DENIED


async def test_limits_can_be_switched_off(rules: Rules) -> None:
    async with gateway(limited(rules, enabled=False, consumer_rate=1, consumer_burst=1)) as channel:
        stub = gateway_pb2_grpc.GroupServiceStub(channel)
        alice = bearer(Principal("alice", Role.CONSUMER))
        for _ in range(5):
            call = stub.SetGroupLevel(gateway_pb2.SetGroupLevelRequest(), metadata=alice, timeout=5)
            assert await code_of(call) is grpc.StatusCode.PERMISSION_DENIED
