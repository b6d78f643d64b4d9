"""The servicer's edges without a database: input checks and the deadlock retry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from qun.common.v1 import facts_pb2 as f
from qun.eligibility.v1 import eligibility_pb2 as e
from services.common.clock import ManualClock
from services.common.errors import InvalidArgument
from services.common.rules import Rules, load_rules
from services.eligibility import servicer as servicer_module
from services.eligibility.domain import PaidOrder
from services.eligibility.servicer import EligibilityServiceServicer, parse_facts
from tests.integration.eligibility import facts as F

BOUNDS = load_rules(env={}).bounds


def db_error(sqlstate: str) -> DBAPIError:
    orig = Exception(f"sqlstate {sqlstate}")
    orig.sqlstate = sqlstate  # type: ignore[attr-defined]
    return DBAPIError("INSERT …", {}, orig)


class FlakyDatabase:
    """Fails the first transactions with the given errors, then succeeds."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.attempts = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[object]:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        yield object()


class NoRepository:
    def __init__(self, session: object, rules: Rules) -> None:
        pass

    async def ingest(self, facts: Any, now: Any) -> list[object]:
        return []


@pytest.fixture
def no_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servicer_module, "Ingestion", NoRepository)


def batch() -> e.IngestFactsRequest:
    return F.ingest(F.consumer("c1"))


@pytest.mark.usefixtures("no_repository")
async def test_ingest_retries_a_batch_that_hit_a_deadlock(rules: Rules, clock: ManualClock) -> None:
    db = FlakyDatabase([db_error("40P01"), db_error("40001")])
    service = EligibilityServiceServicer(db, rules, clock)  # type: ignore[arg-type]
    response = await service.IngestFacts(batch(), None)  # type: ignore[arg-type]
    assert response.applied == 1
    assert db.attempts == 3


@pytest.mark.usefixtures("no_repository")
async def test_ingest_does_not_retry_other_database_errors(rules: Rules, clock: ManualClock) -> None:
    db = FlakyDatabase([db_error("23505")])
    with pytest.raises(DBAPIError):
        await EligibilityServiceServicer(db, rules, clock).IngestFacts(batch(), None)  # type: ignore[arg-type]
    assert db.attempts == 1


@pytest.mark.usefixtures("no_repository")
async def test_ingest_gives_up_after_its_attempts(rules: Rules, clock: ManualClock) -> None:
    db = FlakyDatabase([db_error("40P01") for _ in range(servicer_module.MAX_ATTEMPTS)])
    with pytest.raises(DBAPIError):
        await EligibilityServiceServicer(db, rules, clock).IngestFacts(batch(), None)  # type: ignore[arg-type]
    assert db.attempts == servicer_module.MAX_ATTEMPTS


def test_facts_may_be_stamped_up_to_a_day_ahead_of_the_clock(clock: ManualClock) -> None:
    ahead = clock.now() + timedelta(days=1)
    [order] = parse_facts([F.order("o1", "s1", "c1", 1, ahead)], clock.now(), BOUNDS)
    assert isinstance(order, PaidOrder) and order.paid_at == ahead
    with pytest.raises(InvalidArgument) as refused:
        parse_facts([F.order("o1", "s1", "c1", 1, ahead + timedelta(seconds=1))], clock.now(), BOUNDS)
    assert [v.field for v in refused.value.violations] == ["facts[0].paid_order.paid_at"]


def test_a_batch_holds_at_most_1000_facts(clock: ManualClock) -> None:
    assert len(parse_facts([F.consumer("c1")] * 1000, clock.now(), BOUNDS)) == 1000
    with pytest.raises(InvalidArgument):
        parse_facts([F.consumer("c1")] * 1001, clock.now(), BOUNDS)


@pytest.mark.parametrize(
    ("fact", "field"),
    [
        (F.account("c1", f.ACCOUNT_ROLE_CONSUMER, "store-1"), "facts[0].account.store_id"),
        (F.account("m1", f.ACCOUNT_ROLE_STORE_MAIN, "store-1", own_store_id="s2"), "facts[0].account.own_store_id"),
        (F.account("m1", f.ACCOUNT_ROLE_CONSUMER, broadcast_permitted=True), "facts[0].account.broadcast_permitted"),
        (F.fan_level("h1", "c1", 0), "facts[0].fan_level.level"),
        (F.score("c1", -1), "facts[0].taoqi_score.score"),
        (F.content_level("s1", -1, ManualClock().now()), "facts[0].content_level.level"),
        (F.crowd("s1", "", "c1"), "facts[0].crowd_membership.crowd_id"),
        (f.Fact(store=f.StoreFact(store_id="s1", main_account_id="m1")), "facts[0].store.platform"),
        (f.Fact(blacklist=f.BlacklistFact(consumer_id="c1", listed=True)), "facts[0].blacklist.scope"),
    ],
)
def test_each_fact_is_checked(clock: ManualClock, fact: f.Fact, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_facts([fact], clock.now(), BOUNDS)
    assert [v.field for v in refused.value.violations] == [field]
