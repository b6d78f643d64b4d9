"""Review and cancellation (P6) under the store's account lock, the review queue (P8) and the listings of pushes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update

from services.common.errors import NotFound, RuleRefusal
from services.common.keysets import keyset_page
from services.push import rules as domain
from services.push.kinds import Quota, declaration
from services.push.models import (
    PushRow,
)
from services.push.repository import (
    PushUnit,
    grants,
    pushes,
    recall_slots,
)
from services.push.rules import PushKind, PushState


@dataclass(frozen=True)
class Transition:
    """A push that changed state, for the metrics the servicer counts after commit."""

    push: PushRow
    quota_returned: bool = False


class Reviews(PushUnit):
    """Decisions on submitted pushes, and their listings."""

    async def _return_quota(self, row: PushRow) -> None:
        spent = declaration(PushKind(row.kind)).quota
        if spent is Quota.YEARLY_SLOT:
            await self.session.execute(
                delete(recall_slots).where(
                    recall_slots.c.store_id == row.store_id, recall_slots.c.push_id == row.push_id
                )
            )
        elif spent is Quota.GRANT:
            await self.session.execute(
                update(grants)
                .where(grants.c.store_id == row.store_id, grants.c.push_id == row.push_id)
                .values(push_id=None)
            )
        row.quota_returned = True  # P1: a returned subscription push no longer starts the interval

    async def _locked(self, push_id: str, store_id: str | None) -> tuple[PushRow, PushState]:
        """The push, under its account's lock (P1–P5 quotas change with it); NOT_FOUND for another store's."""
        found = await self.store_of(push_id)
        if found is None or (store_id is not None and found != store_id):
            raise NotFound("push", push_id)
        await self.lock_account(found)
        row = await self.push(found, push_id, lock=True)
        assert row is not None
        return row, PushState(row.state)

    async def review(self, push_id: str, approve: bool, reviewer_id: str, note: str) -> Transition:
        row, state = await self._locked(push_id, None)
        if state is not PushState.PENDING_REVIEW:
            raise RuleRefusal([domain.not_pending(push_id, state)])
        row.reviewed_by = reviewer_id
        row.reviewed_at = self.now
        row.review_note = note
        returned = False
        if approve:
            assert row.submitted_at is not None
            row.state = PushState.APPROVED.value
            row.send_at = domain.send_at(row.submitted_at, self.now, self.rules)
        else:
            row.state = PushState.REJECTED.value
            if domain.returns_quota("reject", self.rules):
                await self._return_quota(row)
                returned = True
        await self.session.flush()
        return Transition(row, returned)

    async def cancel(self, push_id: str, store_id: str) -> Transition:
        row, state = await self._locked(push_id, store_id)
        if state not in domain.CANCELLABLE_STATES:
            raise RuleRefusal([domain.not_cancellable(push_id, state)])
        row.state = PushState.CANCELLED.value
        row.cancelled_at = self.now
        returned = False
        if domain.returns_quota("cancel", self.rules):
            await self._return_quota(row)
            returned = True
        await self.session.flush()
        return Transition(row, returned)

    async def list_pushes(
        self, store_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[PushRow], tuple[datetime, str] | None]:
        stmt = select(PushRow).where(
            PushRow.store_id == store_id,
            PushRow.submitted_at.is_not(None),
            PushRow.state.in_([s.value for s in domain.SUBMITTED_STATES]),
        )
        return await keyset_page(
            self.session, stmt, PushRow.submitted_at, PushRow.push_id, before, limit, newest_first=True
        )

    async def pending_reviews(
        self, kind: PushKind | None, store_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[PushRow], tuple[datetime, str] | None]:
        """Pushes pending review, oldest submission first (ties by push id), from ``ix_pushes_pending`` (or
        ``ix_pushes_pending_store`` for one store). Keyset pages: each resumes after the last (time, id) listed,
        so reviews taken or submitted between pages never shift or repeat a row."""
        stmt = select(PushRow).where(PushRow.state == PushState.PENDING_REVIEW.value)
        if store_id:
            stmt = stmt.where(PushRow.store_id == store_id)
        if kind is not None:
            stmt = stmt.where(PushRow.kind == kind.value)
        return await keyset_page(self.session, stmt, PushRow.submitted_at, PushRow.push_id, after, limit)

    async def review_queue(self) -> tuple[datetime | None, int]:
        """The oldest pending submission and how many are pending, across every store (P8's gauges)."""
        oldest, count = (
            await self.session.execute(
                select(func.min(pushes.c.submitted_at), func.count()).where(
                    pushes.c.state == PushState.PENDING_REVIEW.value
                )
            )
        ).one()
        return oldest, int(count or 0)
