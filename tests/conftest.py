"""Fixtures every suite shares: databases on SQLite and PostgreSQL, clocks, rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from services.common.clock import ManualClock
from services.common.rules import Rules, load_rules
from tests.support import postgres

# Property tests assert rules, not speed: no per-example deadline, which a busy machine would miss.
settings.register_profile("qun", deadline=None)
settings.load_profile("qun")


@pytest.fixture
def rules() -> Rules:
    return load_rules(env={})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database of its own."""
    with postgres.fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'service.db'}"
    else:
        with postgres.fresh_database() as url:
            yield url
