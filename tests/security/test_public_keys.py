"""Keys nobody can forge, on a running platform: a gateway given a JWKS takes only tokens its keys signed.

The local stack's secret (HS256) mints nothing there, not even an ops token; a token of the right
key is served; a key published later (rotation) is taken without a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gateway.auth import Principal, Role, mint_token
from qun.gateway.v1 import operations_pb2, operations_pb2_grpc
from tests.support.hostile import database
from tests.support.stack import RunningStack, running_stack
from tests.unit.gateway.test_keys import ec_key, jwk, token, write_jwks

OPS = Principal("ops-1", Role.OPS)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("jwks")
    signer = ec_key()
    write_jwks(folder / "jwks.json", jwk(signer, "ops-signer-1"))
    return folder / "jwks.json", signer


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, object]) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp("keys"), database(), {"QUN_JWKS_FILE": str(keys[0])}) as running:
        yield running


async def run_job(platform: RunningStack, bearer: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(platform.stack.gateway.address) as channel:
        api = operations_pb2_grpc.GroupOperationsServiceStub(channel)
        try:
            await api.RunJob(
                operations_pb2.RunJobRequest(job=operations_pb2.JOB_SLEEPING),
                metadata=(("authorization", f"Bearer {bearer}"),),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_only_tokens_signed_by_a_published_key_pass(platform: RunningStack, keys: tuple[Path, object]) -> None:
    jwks, signer = keys
    assert await run_job(platform, token(signer, "ops-signer-1", "ES256")) is grpc.StatusCode.OK
    # The local stack's secret is set in this stack too: with public keys configured, it mints nothing.
    forged = mint_token(platform.stack.secrets["QUN_TOKEN_SECRET"], OPS)
    assert await run_job(platform, forged) is grpc.StatusCode.UNAUTHENTICATED
    assert await run_job(platform, token(ec_key(), "ops-signer-1", "ES256")) is grpc.StatusCode.UNAUTHENTICATED
    rotated = ec_key()
    write_jwks(jwks, jwk(signer, "ops-signer-1"), jwk(rotated, "ops-signer-2"))
    assert await run_job(platform, token(rotated, "ops-signer-2", "ES256")) is grpc.StatusCode.OK
