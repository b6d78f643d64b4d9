"""Gateway ↔ backend over TLS with client certificates: a platform started with the files serves every
flow as before, and a backend refuses anyone without a certificate its CA signed."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qun.groups.v1 import groups_pb2, groups_pb2_grpc
from services.common.interceptors import INTERNAL_TOKEN_HEADER
from services.common.tls import tls_from_env
from tests.flows.test_create_and_join import join, new_group, new_store
from tests.support import facts
from tests.support.certificates import write_certificates
from tests.support.hostile import database
from tests.support.stack import RunningStack, running_stack, unique


@pytest.fixture(scope="module")
def tls_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, tls_env: dict[str, str]) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp("tls"), database(), tls_env) as running:
        yield running


async def test_every_flow_runs_over_tls_and_a_backend_refuses_callers_without_a_certificate(
    platform: RunningStack, tls_env: dict[str, str]
) -> None:
    gw = platform.client()
    try:
        store_id, main_id = await new_store(gw, platform)
        group_set = await new_group(gw, store_id, main_id)
        consumer = unique("c")
        await gw.report(facts.consumer(consumer, follows=(store_id,)))
        joined = await join(gw, consumer, group_set.group_set_id)
        assert joined.membership.group_set_id == group_set.group_set_id
    finally:
        await gw.close()

    groups = platform.stack.endpoints["groups"].address
    token = ((INTERNAL_TOKEN_HEADER, platform.stack.secrets["QUN_INTERNAL_TOKEN"]),)
    request = groups_pb2.GetGroupSetRequest(group_set_id=group_set.group_set_id)
    # Plaintext, even with the internal credential: no answer.
    async with grpc.aio.insecure_channel(groups) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as plain:
            await groups_pb2_grpc.GroupsServiceStub(channel).GetGroupSet(request, metadata=token, timeout=3)
        assert plain.value.code() is grpc.StatusCode.UNAVAILABLE
    # TLS that trusts the CA but presents no certificate: the handshake fails.
    tls = tls_from_env(tls_env)
    assert tls is not None
    no_cert = grpc.ssl_channel_credentials(root_certificates=tls.ca)
    async with grpc.aio.secure_channel(groups, no_cert) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await groups_pb2_grpc.GroupsServiceStub(channel).GetGroupSet(request, metadata=token, timeout=3)
        assert anonymous.value.code() is grpc.StatusCode.UNAVAILABLE
    # With the certificate: served (health needs no credential).
    async with grpc.aio.secure_channel(groups, tls.channel_credentials()) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
