"""The dispatcher's batches (P7), one store at a time (D3), and the delivery ledger they append to.

A batch takes a store's oldest due push with ``FOR UPDATE SKIP LOCKED``, writes the next batch of its
audience into ``deliveries`` (``INSERT … SELECT … ON CONFLICT DO NOTHING``), moves the push's cursor and
appends to the ledger, in one transaction; the ledger's number comes from ``ledger_head``, locked last.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, select, update

from services.common.sqltypes import UtcDateTime
from services.push import rules as domain
from services.push.repository import (
    PushUnit,
    audience,
    batches,
    deliveries,
    ledger_head,
    pushes,
)
from services.push.rules import PushKind, PushState


@dataclass(frozen=True)
class BatchResult:
    """What one dispatcher batch did."""

    store_id: str
    push_id: str
    kind: str
    written: int
    finished: bool


@dataclass(frozen=True)
class LedgerBatch:
    store_id: str
    push_id: str
    ledger_seq: int
    after_recipient: str
    last_recipient: str
    written_at: datetime


class Deliveries(PushUnit):
    """Dispatch batches and the ledger's reads."""

    async def due_stores(self, excluding: Collection[str], limit: int) -> list[tuple[str, datetime]]:
        """Stores with a push due and not fully written, with its send time, the longest waiting first.

        The dispatcher writes one batch per store in turn (SPEC D3): a large push, or a store whose batch
        fails, holds up no other store. ``excluding`` leaves out the stores it has set aside (backing off).
        """
        oldest = func.min(pushes.c.send_at)
        stmt = (
            select(pushes.c.store_id, oldest)
            .where(pushes.c.state.in_([s.value for s in domain.DUE_STATES]), pushes.c.send_at <= self.now)
            .group_by(pushes.c.store_id)
            .order_by(oldest, pushes.c.store_id)
            .limit(limit)
        )
        if excluding:
            stmt = stmt.where(pushes.c.store_id.not_in(sorted(excluding)))
        return [(str(store), at) for store, at in (await self.session.execute(stmt)).all()]

    async def dispatch_batch(self, store_id: str, batch_size: int) -> BatchResult | None:
        """Writes the next batch of the store's oldest due push, or returns None when it has none due (or another
        replica holds it)."""
        claimed = (
            await self.session.execute(
                select(pushes.c.store_id, pushes.c.push_id, pushes.c.kind, pushes.c.dispatch_cursor)
                .where(
                    pushes.c.store_id == store_id,
                    pushes.c.state.in_([s.value for s in domain.DUE_STATES]),
                    pushes.c.send_at <= self.now,
                )
                .order_by(pushes.c.send_at, pushes.c.push_id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
        ).first()
        if claimed is None:
            return None
        store_id, push_id, kind, cursor = claimed
        # A kind this version does not know was never checked by its rules: refuse to send it (the store is
        # set aside and retried, SPEC D3) rather than deliver it.
        kind = PushKind(kind).value
        after = cursor or ""
        page = (
            select(audience.c.recipient_id)
            .where(audience.c.store_id == store_id, audience.c.push_id == push_id, audience.c.recipient_id > after)
            .order_by(audience.c.recipient_id)
            .limit(batch_size)
            .subquery()
        )
        count, last = (await self.session.execute(select(func.count(), func.max(page.c.recipient_id)))).one()
        count = int(count or 0)
        written = 0
        if count:
            source = select(
                audience.c.store_id, audience.c.push_id, audience.c.recipient_id, literal(self.now, UtcDateTime())
            ).where(
                audience.c.store_id == store_id,
                audience.c.push_id == push_id,
                audience.c.recipient_id > after,
                audience.c.recipient_id <= last,
            )
            result = await self.session.execute(
                self._insert(deliveries)
                .from_select(["store_id", "push_id", "recipient_id", "written_at"], source)
                .on_conflict_do_nothing()
            )
            written = int(result.rowcount or 0)  # type: ignore[attr-defined]  # a DML result has a rowcount; Result is typed without it
            # Last, so the head's row lock is held only until this transaction commits.
            seq = (
                await self.session.execute(
                    update(ledger_head)
                    .where(ledger_head.c.id == 1)
                    .values(last_seq=ledger_head.c.last_seq + 1)
                    .returning(ledger_head.c.last_seq)
                )
            ).scalar_one()
            await self.session.execute(
                batches.insert().values(
                    store_id=store_id,
                    push_id=push_id,
                    ledger_seq=seq,
                    after_recipient=after,
                    last_recipient=last,
                    size=written,
                    written_at=self.now,
                )
            )
        finished = count < batch_size
        values: dict[str, Any] = {
            "delivered_count": pushes.c.delivered_count + written,
            "state": (PushState.SENT if finished else PushState.SENDING).value,
        }
        if count:
            values["dispatch_cursor"] = last
        if finished:
            values["sent_at"] = self.now
        await self.session.execute(
            update(pushes).where(pushes.c.store_id == store_id, pushes.c.push_id == push_id).values(**values)
        )
        return BatchResult(store_id, push_id, kind, written, finished)

    async def ledger_batches(self, after_seq: int, limit: int) -> list[LedgerBatch]:
        rows = await self.session.execute(
            select(batches).where(batches.c.ledger_seq > after_seq).order_by(batches.c.ledger_seq).limit(limit)
        )
        return [
            LedgerBatch(r.store_id, r.push_id, int(r.ledger_seq), r.after_recipient, r.last_recipient, r.written_at)
            for r in rows
        ]

    async def ledger_batch(self, seq: int) -> LedgerBatch | None:
        found = await self.ledger_batches(seq - 1, 1)
        return found[0] if found and found[0].ledger_seq == seq else None

    async def batch_recipients(self, batch: LedgerBatch, after: str, limit: int) -> list[str]:
        # Both bounds in SQL: recipient ids are compared in the database's collation, never in Python's.
        rows = await self.session.scalars(
            select(deliveries.c.recipient_id)
            .where(
                deliveries.c.store_id == batch.store_id,
                deliveries.c.push_id == batch.push_id,
                deliveries.c.recipient_id > batch.after_recipient,
                deliveries.c.recipient_id > after,
                deliveries.c.recipient_id <= batch.last_recipient,
            )
            .order_by(deliveries.c.recipient_id)
            .limit(limit)
        )
        return list(rows)
