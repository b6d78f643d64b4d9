"""One running platform per module and backend; each test uses fresh ids in it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.stack import GatewayClient, RunningStack, running_stack


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp(f"stack-{request.param}"), request.param) as running:
        yield running


@pytest.fixture
async def gw(platform: RunningStack) -> AsyncIterator[GatewayClient]:
    client = platform.client()
    try:
        yield client
    finally:
        await client.close()
