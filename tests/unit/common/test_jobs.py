"""D3: a job settles stores one at a time; a failing store is logged, counted, set aside and retried later."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import exc

from services.common.jobs import StoreBackoff, settle_stores


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failures_counted(job: str) -> float:
    return REGISTRY.get_sample_value("qun_job_failures_total", {"task": job}) or 0.0


async def test_D3_one_store_failing_never_stops_the_others() -> None:
    clock = Clock()
    backoff = StoreBackoff("test-isolation", clock=clock)
    seen: list[str] = []

    async def settle(store_id: str) -> int:
        seen.append(store_id)
        if store_id == "poisoned":
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return len(store_id)

    before = failures_counted("test-isolation")
    report = await settle_stores(["a", "poisoned", "bb"], settle, backoff)
    assert report.settled == {"a": 1, "bb": 2}
    assert [(f.store_id, f.attempts, f.retry_in_seconds) for f in report.failed] == [("poisoned", 1, 30.0)]
    assert report.failed[0].error == "OverflowError: Python int too large to convert to SQLite INTEGER"
    assert failures_counted("test-isolation") == before + 1

    # Set aside while its backoff runs; the others are settled as before.
    report = await settle_stores(["a", "poisoned", "bb"], settle, backoff)
    assert report.waiting == ["poisoned"] and set(report.settled) == {"a", "bb"}
    clock.now += 30
    report = await settle_stores(["poisoned"], settle, backoff)
    assert [(f.attempts, f.retry_in_seconds) for f in report.failed] == [(2, 60.0)]  # doubled
    for _ in range(10):
        clock.now += 3600
        report = await settle_stores(["poisoned"], settle, backoff)
    assert report.failed[0].retry_in_seconds == 3600.0  # at most an hour
    assert seen.count("a") == 2


async def test_D3_a_store_that_recovers_is_forgotten_and_ops_can_retry_now() -> None:
    clock = Clock()
    backoff = StoreBackoff("test-recovery", clock=clock)
    broken = {"s1"}

    async def settle(store_id: str) -> str:
        if store_id in broken:
            raise ValueError("bad row")
        return "ok"

    await settle_stores(["s1"], settle, backoff)
    assert backoff.waiting() == {"s1"}
    broken.clear()
    backoff.forget()
    assert (await settle_stores(["s1"], settle, backoff)).settled == {"s1": "ok"}
    assert backoff.waiting() == frozenset()


async def test_D3_a_database_outage_is_nobodys_store_and_ends_the_pass() -> None:
    backoff = StoreBackoff("test-outage", clock=Clock())

    async def settle(store_id: str) -> None:
        refused = ConnectionRefusedError("connection refused")
        raise exc.OperationalError("SELECT 1", {}, refused) from refused  # as SQLAlchemy raises it

    with pytest.raises(exc.OperationalError):
        await settle_stores(["s1", "s2"], settle, backoff)
    assert backoff.waiting() == frozenset()
