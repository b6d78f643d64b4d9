"""The figures of a store's pushes (P1–P3) and their audiences, counted by the database.

The old-customer fans (P3) are read from their day-by-day changes
(``old_fans``), never from the orders. The recall audience, old customers who
are not fans, is read from ``ix_paid_orders_store_consumer_paid_at`` in
consumer order and streamed from a server-side cursor in chunks; it is read
once per push sent, not on every submission.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, true

from services.eligibility import rules as domain_rules
from services.eligibility.domain import PushAudience, PushFacts
from services.eligibility.old_fans import count_statement
from services.eligibility.repository import (
    FactsUnit,
    broadcasts,
    exists_in,
    follows,
    paid_orders,
    push_subscriptions,
    revisit_rates,
    scalar_of,
    stores,
)


class PushFactsReads(FactsUnit):
    """A store's push figures and audiences."""

    def _old_customers(self, store_id: str, now: datetime) -> Any:
        """P3: the store's buyers with orders on enough distinct days of today's half year, and their last order.

        Read from ``ix_paid_orders_store_consumer_paid_at`` in consumer order;
        the orders themselves are never loaded.
        """
        push = self.rules.push
        market = self.rules.calendar.market
        o = paid_orders.c
        return (
            select(o.consumer_id.label("consumer_id"), func.max(o.paid_at).label("last_paid"))
            .where(
                o.store_id == store_id,
                o.paid_at >= domain_rules.old_customer_window_start(now, push, market),
                o.paid_at < market.next_day_start(now),
            )
            .group_by(o.consumer_id)
            .having(func.count(func.distinct(self.local_day(o.paid_at))) >= push.old_customer_min_days)
            .subquery("old_customers")
        )

    @staticmethod
    def _is_fan(store_id: str, consumer: Any) -> Any:
        return exists_in(
            follows, follows.c.store_id == store_id, follows.c.consumer_id == consumer, follows.c.following == true()
        )

    async def push_facts(self, store_id: str, now: datetime) -> PushFacts | None:
        """The P1/P2 figures of a store's content account: one statement, counted by the database."""
        push = self.rules.push
        revisit = (
            select(revisit_rates.c.rate_bp)
            .where(revisit_rates.c.store_id == store_id, revisit_rates.c.computed_at <= now)
            .order_by(revisit_rates.c.computed_at.desc())
            .limit(1)
        )
        stmt = select(
            stores.c.main_account_id,
            scalar_of(
                select(func.count()).where(
                    push_subscriptions.c.store_id == store_id, push_subscriptions.c.subscribed == true()
                )
            ).label("subscribers"),
            scalar_of(count_statement(store_id, self.rules.calendar.market.day(now))).label("old_customer_fans"),
            scalar_of(
                select(func.count()).where(
                    broadcasts.c.store_id == store_id,
                    broadcasts.c.published_at >= domain_rules.broadcast_window_start(now, push),
                    broadcasts.c.published_at <= now,
                )
            ).label("recent_broadcasts"),
            scalar_of(revisit).label("revisit_rate_bp"),
        ).where(stores.c.store_id == store_id)
        row = (await self.session.execute(stmt)).first()
        if row is None:
            return None
        m = row._mapping
        return PushFacts(
            store_id=store_id,
            main_account_id=m["main_account_id"],
            subscribers=int(m["subscribers"] or 0),
            old_customer_fans=int(m["old_customer_fans"] or 0),
            recent_broadcasts=int(m["recent_broadcasts"] or 0),
            revisit_rate_bp=m["revisit_rate_bp"],
        )

    async def store_exists(self, store_id: str) -> bool:
        return bool((await self.session.execute(select(exists_in(stores, stores.c.store_id == store_id)))).scalar())

    async def push_audience(
        self, store_id: str, audience: PushAudience, limit: int, chunk: int, now: datetime
    ) -> AsyncIterator[list[str]]:
        """The recipients in chunks of ``chunk`` ids, streamed from a server-side cursor.

        Subscribers and fans in consumer order (P1, P5); the recall audience is
        the old customers (P3) who are not fans, most recent buyers first (P2).
        """
        if audience is PushAudience.SUBSCRIBERS:
            stmt = (
                select(push_subscriptions.c.consumer_id)
                .where(push_subscriptions.c.store_id == store_id, push_subscriptions.c.subscribed == true())
                .order_by(push_subscriptions.c.consumer_id)
            )
        elif audience is PushAudience.FANS:
            stmt = (
                select(follows.c.consumer_id)
                .where(follows.c.store_id == store_id, follows.c.following == true())
                .order_by(follows.c.consumer_id)
            )
        else:
            old = self._old_customers(store_id, now)
            stmt = (
                select(old.c.consumer_id)
                .where(~self._is_fan(store_id, old.c.consumer_id))
                .order_by(old.c.last_paid.desc(), old.c.consumer_id)
            )
        if limit:
            stmt = stmt.limit(limit)
        result = await self.session.stream(stmt.execution_options(yield_per=chunk))
        async for partition in result.partitions(chunk):
            yield [row[0] for row in partition]
