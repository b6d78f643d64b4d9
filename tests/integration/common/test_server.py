"""The shared server over a real socket: error mapping, internal credential, metrics, health on drain."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from services.common.client import internal_channel
from services.common.errors import Failure, RuleRefusal, failures_from_status, status_from_error
from services.common.loops import Loop, every
from services.common.server import Server, ServiceApp
from tests.support.inprocess import INTERNAL_TOKEN, settings_for

SERVICE = "qun.test.v1.ProbeService"


async def ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuleRefusal([Failure("T1", "GROUP_SET_FULL", "group-set full: 5000 of 5000", {"members": "5000"})])


async def crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("a bug")


class ProbeApp(ServiceApp):
    name = "groups"

    async def open(self, server: grpc.aio.Server) -> Sequence[str]:
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(fn)
            for name, fn in (("Ok", ok), ("Refuse", refuse), ("Crash", crash))
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        return [SERVICE]


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_server_maps_errors_and_guards_with_the_internal_credential() -> None:
    server = Server(ProbeApp(settings_for("groups")), serve_metrics_http=False)
    port = await server.start()
    address = f"127.0.0.1:{port}"
    try:
        async with internal_channel(address, INTERNAL_TOKEN) as channel:
            assert await channel.unary_unary(f"/{SERVICE}/Ok")(b"hi", timeout=5) == b"hi"

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary(f"/{SERVICE}/Refuse")(b"", timeout=5)
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert [f.rule_id for f in failures_from_status(status_from_error(refused.value))] == ["T1"]

            before = sample("qun_internal_errors_total", {"grpc_service": SERVICE, "grpc_method": "Crash"})
            with pytest.raises(grpc.aio.AioRpcError) as crashed:
                await channel.unary_unary(f"/{SERVICE}/Crash")(b"", timeout=5)
            assert crashed.value.code() is grpc.StatusCode.INTERNAL
            assert "a bug" not in (crashed.value.details() or "")  # no internals leak
            after = sample("qun_internal_errors_total", {"grpc_service": SERVICE, "grpc_method": "Crash"})
            assert after == before + 1

        labels = {"grpc_service": SERVICE, "grpc_method": "Refuse", "grpc_type": "unary"}
        assert sample("grpc_server_handled_total", {**labels, "grpc_code": "FAILED_PRECONDITION"}) >= 1

        async with grpc.aio.insecure_channel(address) as bare:
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await bare.unary_unary(f"/{SERVICE}/Ok")(b"hi", timeout=5)
            assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(bare)  # exempt from the credential
            reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop()
    assert server.health._server_status[""] == health_pb2.HealthCheckResponse.NOT_SERVING  # drained


class LoopingApp(ProbeApp):
    """An app that declares a loop: the runtime starts it once SERVING and stops it on the way down."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.passes = 0

    def loops(self) -> Sequence[Loop]:
        async def one_pass() -> None:
            self.passes += 1

        return [every("probe", 0.01, one_pass, at_once=True)]


async def test_the_runtime_starts_an_apps_loops_after_serving_and_stops_them_on_the_way_down() -> None:
    app = LoopingApp(settings_for("groups"))
    server = Server(app, serve_metrics_http=False)
    await server.start()
    try:
        assert server.loops.running == ["probe"]
        while app.passes < 3:
            await asyncio.sleep(0.01)
    finally:
        await server.stop()
    assert server.loops.running == []
    stopped_at = app.passes
    await asyncio.sleep(0.05)
    assert app.passes == stopped_at
