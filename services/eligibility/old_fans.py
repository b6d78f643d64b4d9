"""A store's old-customer fans (SPEC P3), counted as orders and follows arrive, by marketplace day.

Counting them from the orders on every read costs a store's whole half year
of orders, a million rows for a large store. Instead each buyer's runs of
old-customer days (``rules.old_customer_spans``) are kept per store and
consumer (``old_customers``), and a fan's runs are added to the store's
day-by-day changes (``old_fan_changes``): +1 on the first day of a run, −1 on
the day after its last. The count on a day is the sum of the changes up to it,
a read of the store's days, never its orders.

When an order or a follow of a buyer arrives, the buyer's row is locked, their
order days are read again and what they add is replaced: the old runs taken
back, the new ones added. A late or corrected order (an earlier day, another
buyer on the same order id) is therefore counted as if it had come in order.

The counts are made with the P3 numbers and the calendar of the rules file,
recorded as the basis (``old_fan_basis``). A service that starts on another
basis, or on orders loaded in bulk past the ingestion
(``python -m services.eligibility.old_fans``), recounts every store once.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, and_, delete, func, literal, select, text, true, tuple_

from services.common.db import Database
from services.common.rules import Rules, load_rules
from services.common.schema import table_of
from services.common.settings import database_url
from services.eligibility import rules as domain_rules
from services.eligibility.domain import PaidOrder
from services.eligibility.models import OldCustomerRow, OldFanBasisRow, OldFanChangeRow
from services.eligibility.repository import FactsUnit, follows, paid_orders

old_customers = table_of(OldCustomerRow)
old_fan_changes = table_of(OldFanChangeRow)
old_fan_basis = table_of(OldFanBasisRow)

CHUNK = 500
RECOUNT_PAGE = 5_000
Pair = tuple[str, str]  # (store_id, consumer_id)
Span = tuple[date, date]  # [first day, end day)


@dataclass(frozen=True)
class Counted:
    """What one buyer adds to one store's count: their old-customer runs, if they are a fan."""

    fan: bool
    spans: tuple[Span, ...]

    def changes(self, sign: int) -> Iterator[tuple[date, int]]:
        if self.fan:
            for first, end in self.spans:
                yield first, sign
                yield end, -sign


NOTHING = Counted(False, ())


def count_statement(store_id: str, today: date) -> Select[Any]:
    """A store's old-customer fans on a marketplace day: the sum of its changes up to that day."""
    c = old_fan_changes.c
    return select(func.coalesce(func.sum(c.delta), 0)).where(c.store_id == store_id, c.day <= today)


def basis(rules: Rules) -> str:
    """The numbers the counts depend on: P3's days and months, and the calendar's offset."""
    push = rules.push
    return (
        f"p3:{push.old_customer_min_days}d:{push.old_customer_window_months}m:utc{rules.calendar.utc_offset_hours:+d}"
    )


def encode_spans(spans: Iterable[Span]) -> str:
    return ",".join(f"{first.isoformat()}:{end.isoformat()}" for first, end in spans)


def decode_spans(text: str) -> tuple[Span, ...]:
    spans = []
    for part in filter(None, text.split(",")):
        first, end = part.split(":")
        spans.append((date.fromisoformat(first), date.fromisoformat(end)))
    return tuple(spans)


def day_of(value: Any) -> date:
    """A day as the driver returns it: a ``date`` from PostgreSQL, ISO text from SQLite."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def changes_between(before: Counted, after: Counted) -> Counter[date]:
    """The day-by-day changes that turn what a buyer added into what they add now (zeros dropped)."""
    delta: Counter[date] = Counter()
    for day, sign in itertools.chain(before.changes(-1), after.changes(+1)):
        delta[day] += sign
    return Counter({day: n for day, n in delta.items() if n})


class OldFanCounts(FactsUnit):
    """The stored counts over one transaction: recounting buyers, reading a store's count, recounting all."""

    async def count(self, store_id: str, today: date) -> int:
        """The store's old-customer fans on a marketplace day."""
        return int((await self.session.execute(count_statement(store_id, today))).scalar_one())

    # --- as facts arrive ----------------------------------------------------------

    async def buyers_replaced(self, orders: Sequence[PaidOrder]) -> set[Pair]:
        """The buyers the given orders belong to now, before a re-sent order names another buyer.

        Read before the orders are written, with their rows locked (PostgreSQL),
        so the buyer an order is taken from is recounted too.
        """
        keys = sorted({(o.store_id, o.order_id) for o in orders})
        found: set[Pair] = set()
        for chunk in _chunks(keys):
            stmt = select(paid_orders.c.store_id, paid_orders.c.consumer_id).where(
                tuple_(paid_orders.c.store_id, paid_orders.c.order_id).in_(chunk)
            )
            if self.postgres:
                stmt = stmt.order_by(paid_orders.c.store_id, paid_orders.c.order_id).with_for_update()
            found.update((row[0], row[1]) for row in await self.session.execute(stmt))
        return found

    async def recount(self, pairs: Iterable[Pair]) -> None:
        """Replaces what each buyer adds to their store's count with what their orders and follow say now.

        Every buyer's row is locked first, in sorted order, then their order
        days and follows are read and the changes written sorted by store and
        day, so concurrent batches queue rather than deadlock.
        """
        ordered = sorted(set(pairs))
        before: dict[Pair, Counted] = {}
        for chunk in _chunks(ordered):
            before.update(await self._lock(chunk))
        delta: Counter[tuple[str, date]] = Counter()
        for chunk in _chunks(ordered):
            after = await self._counted_now(chunk)
            for pair in chunk:
                for day, n in changes_between(before.get(pair, NOTHING), after[pair]).items():
                    delta[(pair[0], day)] += n
            await self._write_counted([_row(pair, after[pair]) for pair in chunk])
        await self._add_changes(delta)

    async def _lock(self, pairs: Sequence[Pair]) -> dict[Pair, Counted]:
        rows = [{"store_id": s, "consumer_id": c, "fan": False, "spans": ""} for s, c in pairs]
        await self.session.execute(self._insert(old_customers).values(rows).on_conflict_do_nothing())
        oc = old_customers.c
        stmt = select(oc.store_id, oc.consumer_id, oc.fan, oc.spans).where(
            tuple_(oc.store_id, oc.consumer_id).in_(pairs)
        )
        if self.postgres:
            stmt = stmt.order_by(oc.store_id, oc.consumer_id).with_for_update()
        return {(r[0], r[1]): Counted(bool(r[2]), decode_spans(r[3])) for r in await self.session.execute(stmt)}

    async def _counted_now(self, pairs: Sequence[Pair]) -> dict[Pair, Counted]:
        """What the given buyers add now, read by their keys."""
        return await self._counted(
            pairs,
            tuple_(paid_orders.c.store_id, paid_orders.c.consumer_id).in_(pairs),
            tuple_(follows.c.store_id, follows.c.consumer_id).in_(pairs),
        )

    async def _counted_between(self, pairs: Sequence[Pair], after: Pair | None) -> dict[Pair, Counted]:
        """What a page of buyers in key order adds now, read as one range of each index (a recount)."""

        def between(store: Any, consumer: Any) -> Any:
            key = tuple_(store, consumer)
            upto = key <= tuple_(literal(pairs[-1][0]), literal(pairs[-1][1]))
            return upto if after is None else and_(key > tuple_(literal(after[0]), literal(after[1])), upto)

        o, fo = paid_orders.c, follows.c
        return await self._counted(pairs, between(o.store_id, o.consumer_id), between(fo.store_id, fo.consumer_id))

    async def _counted(self, pairs: Sequence[Pair], orders_of: Any, follows_of: Any) -> dict[Pair, Counted]:
        o = paid_orders.c
        day = self.local_day(o.paid_at)
        days_stmt = select(o.store_id, o.consumer_id, day).where(orders_of).group_by(o.store_id, o.consumer_id, day)
        days: dict[Pair, list[date]] = {}
        for row in await self.session.execute(days_stmt):
            days.setdefault((row[0], row[1]), []).append(day_of(row[2]))
        fans_stmt = select(follows.c.store_id, follows.c.consumer_id).where(follows_of, follows.c.following == true())
        fans = {(row[0], row[1]) for row in await self.session.execute(fans_stmt)}
        push = self.rules.push
        return {
            pair: Counted(pair in fans, tuple(domain_rules.old_customer_spans(days.get(pair, ()), push)))
            for pair in pairs
        }

    async def _write_counted(self, rows: list[dict[str, Any]]) -> None:
        stmt = self._insert(old_customers).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=["store_id", "consumer_id"], set_={"fan": stmt.excluded.fan, "spans": stmt.excluded.spans}
        )
        await self.session.execute(stmt)

    async def _add_changes(self, delta: Counter[tuple[str, date]]) -> None:
        keys = sorted(key for key, n in delta.items() if n)
        for chunk in _chunks(keys):
            stmt = self._insert(old_fan_changes).values(
                [{"store_id": store, "day": day, "delta": delta[(store, day)]} for store, day in chunk]
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["store_id", "day"], set_={"delta": old_fan_changes.c.delta + stmt.excluded.delta}
            )
            await self.session.execute(stmt)

    # --- every store at once --------------------------------------------------------

    async def current_basis(self) -> str | None:
        return (await self.session.execute(select(old_fan_basis.c.basis))).scalar()

    async def lock_all(self) -> None:
        """PostgreSQL: the buyers' table locked EXCLUSIVE for a recount of every store: reads go on, a recount of
        arriving facts waits, and recounts itself on top of this one's rows once it commits."""
        if self.postgres:
            await self.session.execute(text("LOCK TABLE old_customers IN EXCLUSIVE MODE"))

    async def recount_all(self) -> int:
        """Counts every store's old-customer fans from scratch on this rules file's basis; returns the buyers.

        Call it after ``lock_all``. Buyers are read in pages of ``RECOUNT_PAGE``
        in store and consumer order, each page one range of the indexes.
        """
        await self.session.execute(delete(old_customers))
        await self.session.execute(delete(old_fan_changes))
        o = paid_orders.c
        buyers = 0
        last: Pair | None = None
        delta: Counter[tuple[str, date]] = Counter()
        while True:
            stmt = select(o.store_id, o.consumer_id).group_by(o.store_id, o.consumer_id)
            if last is not None:
                stmt = stmt.where(tuple_(o.store_id, o.consumer_id) > tuple_(literal(last[0]), literal(last[1])))
            page: list[Pair] = [
                (row[0], row[1])
                for row in await self.session.execute(stmt.order_by(o.store_id, o.consumer_id).limit(RECOUNT_PAGE))
            ]
            if not page:
                break
            counted = await self._counted_between(page, last)
            rows = []
            for pair in page:
                for day, n in counted[pair].changes(+1):
                    delta[(pair[0], day)] += n
                rows.append(_row(pair, counted[pair]))
            for chunk in _chunks(rows):
                await self.session.execute(old_customers.insert(), chunk)
            buyers += len(page)
            last = page[-1]
        await self._add_changes(delta)
        await self.session.execute(delete(old_fan_basis))
        await self.session.execute(self._insert(old_fan_basis).values(basis=basis(self.rules)))
        return buyers


def _row(pair: Pair, counted: Counted) -> dict[str, Any]:
    return {"store_id": pair[0], "consumer_id": pair[1], "fan": counted.fan, "spans": encode_spans(counted.spans)}


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


async def ensure_counted(db: Database, rules: Rules) -> bool:
    """Recounts every store when the stored counts were made on another basis (or never); says whether it did."""
    async with db.read() as conn:
        if await OldFanCounts(conn, rules).current_basis() == basis(rules):
            return False
    async with db.transaction() as session:
        counts = OldFanCounts(session, rules)
        await counts.lock_all()
        if await counts.current_basis() == basis(rules):  # another replica counted meanwhile
            return False
        await counts.recount_all()
    return True


async def recount(url: str, rules: Rules) -> int:
    """Recounts every store's old-customer fans; after orders or follows were loaded past the ingestion."""
    db = Database(url, pool_size=1)
    try:
        async with db.transaction() as session:
            counts = OldFanCounts(session, rules)
            await counts.lock_all()
            return await counts.recount_all()
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Recount every store's old-customer fans (P3) from its orders and follows, "
        "after they were loaded in bulk past the ingestion."
    )
    parser.parse_args(argv)
    buyers = asyncio.run(recount(database_url(dict(os.environ), "eligibility"), load_rules()))
    print(f"old-customer fans recounted from {buyers} buyers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
