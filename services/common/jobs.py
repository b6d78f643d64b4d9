"""Jobs that settle stores one at a time, so one store's failure never stops another's (SPEC D3).

Every scheduled job (expiry and refunds, end cards, daily counts, monthly
levels, sleeping customers, push dispatch, draft clean-up) works store by
store, each store in its own transaction. ``settle_stores`` runs that loop:
a store whose settlement raises is logged with the store and the error,
counted in ``qun_job_failures_total{task}`` (the label is ``task`` because Prometheus keeps
``job`` for the scrape target), and set aside with an exponential
backoff (``StoreBackoff``); the other stores go on at once. A failure that is
not the store's — the database is unreachable — stops the pass instead, so an
outage is not blamed on every store and the next pass starts afresh.

The backoff is per replica and in memory: another replica may try the store
sooner, which is harmless (every settlement is idempotent), and a restart
forgets it. A trigger RPC (ops) may try every store now (``retry_now``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge

from qun.common.v1 import jobs_pb2
from services.common.db import is_unavailable
from services.common.errors import clip

log = logging.getLogger("qun.jobs")

T = TypeVar("T")

BACKOFF_BASE_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 3600.0
MAX_ERROR_CHARS = 300

job_failures = Counter(
    "qun_job_failures_total", "Stores a scheduled job failed to settle (each is logged with the store).", ("task",)
)
stores_backing_off = Gauge(
    "qun_job_stores_backing_off", "Stores a job has set aside after a failure, waiting to be retried.", ("task",)
)


@dataclass(frozen=True)
class StoreFailure:
    """One store a job could not settle: what went wrong and when it is tried again."""

    job: str
    store_id: str
    error: str
    attempts: int
    retry_in_seconds: float


@dataclass
class _Strikes:
    attempts: int
    retry_at: float


class StoreBackoff:
    """The stores one job has set aside, each until its backoff ends (30 s, doubling, at most an hour)."""

    def __init__(
        self,
        job: str,
        *,
        base_seconds: float = BACKOFF_BASE_SECONDS,
        max_seconds: float = BACKOFF_MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job = job
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self._clock = clock
        self._strikes: dict[str, _Strikes] = {}
        self._gauge = stores_backing_off.labels(job)
        self._counter = job_failures.labels(job)

    def waiting(self) -> frozenset[str]:
        """Stores not to try now."""
        now = self._clock()
        return frozenset(store for store, strikes in self._strikes.items() if strikes.retry_at > now)

    def failed(self, store_id: str, error: BaseException) -> StoreFailure:
        strikes = self._strikes.get(store_id)
        attempts = 1 if strikes is None else strikes.attempts + 1
        delay = min(self.max_seconds, self.base_seconds * 2 ** (attempts - 1))
        self._strikes[store_id] = _Strikes(attempts, self._clock() + delay)
        self._gauge.set(len(self._strikes))
        self._counter.inc()
        failure = StoreFailure(self.job, store_id, describe(error), attempts, delay)
        log.error(
            "job failed for a store; the other stores go on",
            exc_info=error,
            extra={
                "fields": {
                    "job": self.job,
                    "store_id": store_id,
                    "error": failure.error,
                    "attempts": attempts,
                    "retry_in_seconds": delay,
                }
            },
        )
        return failure

    def succeeded(self, store_id: str) -> None:
        if self._strikes.pop(store_id, None) is not None:
            self._gauge.set(len(self._strikes))

    def forget(self) -> None:
        """Try every store again now (an operator's trigger)."""
        self._strikes.clear()
        self._gauge.set(0)


def describe(error: BaseException) -> str:
    """One line for the log, the trigger's answer and the failure list: the error's type and text, clipped."""
    text = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    return clip(text, MAX_ERROR_CHARS)


@dataclass
class JobReport(Generic[T]):
    """What one pass of a job did: each store's result, the stores that failed, those set aside."""

    job: str
    settled: dict[str, T] = field(default_factory=dict)
    failed: list[StoreFailure] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)

    def merge(self, other: JobReport[T]) -> None:
        self.settled.update(other.settled)
        self.failed.extend(other.failed)
        self.waiting.extend(s for s in other.waiting if s not in self.waiting)


async def settle_stores(
    stores: Iterable[str], settle: Callable[[str], Awaitable[T]], backoff: StoreBackoff
) -> JobReport[T]:
    """``settle`` each store in turn, isolating failures; stores backing off are skipped (listed as waiting).

    A database outage is not a store's fault: it propagates and ends the pass.
    """
    report: JobReport[T] = JobReport(backoff.job)
    waiting = backoff.waiting()
    for store_id in stores:
        if store_id in waiting:
            report.waiting.append(store_id)
            continue
        try:
            report.settled[store_id] = await settle(store_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if is_unavailable(error):
                raise
            report.failed.append(backoff.failed(store_id, error))
        else:
            backoff.succeeded(store_id)
    return report


def failure_to_proto(failure: StoreFailure) -> jobs_pb2.JobFailure:
    """How a trigger RPC reports a store it could not settle."""
    return jobs_pb2.JobFailure(
        job=failure.job,
        store_id=failure.store_id,
        error=failure.error,
        attempts=failure.attempts,
        retry_in_seconds=int(failure.retry_in_seconds),
    )
