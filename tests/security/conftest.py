"""One running platform per security module (PostgreSQL when reachable), with real fixtures in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.hostile import World, database
from tests.support.stack import running_stack


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_stack(tmp_path_factory.mktemp("security"), database()) as platform:
        built = World(platform)
        try:
            built.run(built.build())
            yield built
        finally:
            built.close()
