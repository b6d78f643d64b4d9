"""Persistence of the push service, one method per unit of work over one session (one transaction).

Quotas hold with any number of replicas on one PostgreSQL because every
decision that spends or returns one runs under the row lock of the store's
``push_accounts`` row (``SELECT … FOR UPDATE``), taken first, before the
push's own row; and the schema refuses what the lock should already
prevent: one ``recall_slots`` row per (store, year, tier) (P2), a grant used
by a conditional ``UPDATE … WHERE push_id IS NULL`` (P5).

The dispatcher's batch (P7) takes a store's oldest due push with ``FOR
UPDATE SKIP LOCKED`` (each store with a due push gets its own batch and
transaction, SPEC D3), so replicas work on different pushes or wait their
turn, writes the next batch of its audience into ``deliveries`` (``INSERT …
SELECT … ON CONFLICT DO NOTHING``, the key admits one row per recipient),
moves the push's cursor and appends the batch to the ledger, all in one
transaction:
a crash anywhere leaves the previous batch's state, and the next batch
resumes from the cursor. The ledger's sequence number comes from the
``ledger_head`` row, locked last, so batches are numbered in commit order
and a reader following the ledger never skips one.

On SQLite writers are serialised whole (``BEGIN IMMEDIATE``) and ``FOR
UPDATE`` is not rendered.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc
from sqlalchemy import delete, func, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.calendar import MarketCalendar
from services.common.errors import Failure, InvalidArgument, NotFound, RuleRefusal
from services.common.ids import new_id
from services.common.inserts import dialect_insert
from services.common.rules import PushRules
from services.push import rules as domain
from services.push.models import (
    AudienceRow,
    DeliveryBatchRow,
    DeliveryRow,
    GrantRow,
    LedgerHeadRow,
    NoticeRow,
    PushAccountRow,
    PushRow,
    RecallSlotRow,
    UtcDateTime,
)
from services.push.rules import AccountFacts, GrantView, PushKind, PushState, QuotaState

accounts = PushAccountRow.__table__
pushes = PushRow.__table__
audience = AudienceRow.__table__
recall_slots = RecallSlotRow.__table__
grants = GrantRow.__table__
notices = NoticeRow.__table__
deliveries = DeliveryRow.__table__
batches = DeliveryBatchRow.__table__
ledger_head = LedgerHeadRow.__table__

MAX_LISTED_GRANTS = 100


def facts_to_json(facts: AccountFacts) -> dict[str, Any]:
    return {
        "subscribers": facts.subscribers,
        "old_customer_fans": facts.old_customer_fans,
        "recent_broadcasts": facts.recent_broadcasts,
        "revisit_rate_bp": facts.revisit_rate_bp,
    }


def facts_from_json(data: dict[str, Any]) -> AccountFacts:
    return AccountFacts(
        subscribers=int(data.get("subscribers", 0)),
        old_customer_fans=int(data.get("old_customer_fans", 0)),
        recent_broadcasts=int(data.get("recent_broadcasts", 0)),
        revisit_rate_bp=data.get("revisit_rate_bp"),
    )


@dataclass(frozen=True)
class NewDraft:
    """A validated CreateDraft request."""

    store_id: str
    account_id: str
    kind: PushKind
    title: str
    body: str
    grant_id: str
    request_id: str
    facts: AccountFacts


@dataclass(frozen=True)
class DraftResult:
    push: PushRow
    replayed: bool


@dataclass(frozen=True)
class Transition:
    """A push that changed state, for the metrics the servicer counts after commit."""

    push: PushRow
    quota_returned: bool = False


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


class PushRepository:
    def __init__(self, session: AsyncSession, rules: PushRules, now: datetime, market: MarketCalendar) -> None:
        self.session = session
        self.rules = rules
        self.now = now
        self.market = market
        self.postgres = session.bind.dialect.name == "postgresql"

    def _insert(self, table: Any) -> Any:
        return dialect_insert(self.session.bind.dialect, table)

    # -- locks and reads ----------------------------------------------------------------------

    async def lock_account(self, store_id: str) -> None:
        """Creates the store's account row if needed and locks it (PostgreSQL)."""
        await self.session.execute(
            self._insert(accounts).values(store_id=store_id, created_at=self.now).on_conflict_do_nothing()
        )
        if self.postgres:
            await self.session.execute(
                select(accounts.c.store_id).where(accounts.c.store_id == store_id).with_for_update()
            )

    async def _push(self, store_id: str, push_id: str, *, lock: bool = False) -> PushRow | None:
        stmt = select(PushRow).where(PushRow.store_id == store_id, PushRow.push_id == push_id)
        if lock:
            stmt = stmt.with_for_update()
        return await self.session.scalar(stmt.execution_options(populate_existing=True))

    async def store_of(self, push_id: str) -> str | None:
        """The store of a submitted push (drafts are nobody's business but the gateway's)."""
        row = await self.session.execute(
            select(pushes.c.store_id, pushes.c.state).where(pushes.c.push_id == push_id).limit(1)
        )
        found = row.first()
        if found is None or PushState(found.state) not in domain.SUBMITTED_STATES:
            return None
        return str(found.store_id)

    async def submitted(self, push_id: str, *, lock: bool = False, store_id: str = "") -> PushRow:
        store = await self.store_of(push_id)
        if store is None or (store_id and store != store_id):
            raise NotFound("push", push_id)
        row = await self._push(store, push_id, lock=lock)
        assert row is not None
        return row

    async def _draft(self, store_id: str, push_id: str) -> PushRow:
        row = await self._push(store_id, push_id, lock=True)
        if row is None or row.state != PushState.DRAFT:
            raise NotFound("draft", push_id)
        return row

    async def quota_state(self, store_id: str) -> QuotaState:
        """P1's last counted subscription push, P2's tiers spent this year, P5's unused grants."""
        last = await self.session.scalar(
            select(func.max(pushes.c.submitted_at)).where(
                pushes.c.store_id == store_id,
                pushes.c.kind == PushKind.SUBSCRIPTION.value,
                pushes.c.submitted_at.is_not(None),
                pushes.c.quota_returned.is_(False),
            )
        )
        year = domain.year_of(self.now, self.market)
        used = await self.session.scalars(
            select(recall_slots.c.kind).where(recall_slots.c.store_id == store_id, recall_slots.c.year == year)
        )
        unused = await self.session.execute(
            select(grants.c.grant_id, grants.c.audience_size)
            .where(grants.c.store_id == store_id, grants.c.push_id.is_(None))
            .order_by(grants.c.granted_at, grants.c.grant_id)
            .limit(MAX_LISTED_GRANTS)
        )
        return QuotaState(
            last_subscription_at=last,
            recall_used=frozenset(PushKind(k) for k in used),
            unused_grants=tuple(GrantView(g.grant_id, int(g.audience_size)) for g in unused),
        )

    async def grant(self, store_id: str, grant_id: str) -> GrantView | None:
        row = (
            await self.session.execute(
                select(grants.c.grant_id, grants.c.audience_size, grants.c.push_id).where(
                    grants.c.store_id == store_id, grants.c.grant_id == grant_id
                )
            )
        ).first()
        return GrantView(row.grant_id, int(row.audience_size), row.push_id or "") if row is not None else None

    # -- submission: draft, audience, seal -----------------------------------------------------

    async def create_draft(self, new: NewDraft) -> DraftResult:
        """Checks every rule for this kind now (refusing with all of them) and opens a draft."""
        if new.request_id:
            earlier = await self.session.scalar(
                select(PushRow).where(PushRow.store_id == new.store_id, PushRow.request_id == new.request_id)
            )
            if earlier is not None:
                if earlier.kind != new.kind.value:
                    raise InvalidArgument.one("request_id", f"already used for a {earlier.kind} push")
                return DraftResult(earlier, replayed=earlier.state != PushState.DRAFT)
        quota = await self.quota_state(new.store_id)
        grant = await self.grant(new.store_id, new.grant_id) if new.kind is PushKind.MASS_SEND else None
        failures = domain.submission_failures(
            new.kind, new.facts, quota, self.now, self.rules, self.market, grant_id=new.grant_id, grant=grant
        )
        if failures:
            raise refusal(failures)
        row = PushRow(
            store_id=new.store_id,
            push_id=new_id("ps"),
            kind=new.kind.value,
            state=PushState.DRAFT.value,
            title=new.title,
            body=new.body,
            account_id=new.account_id,
            grant_id=new.grant_id or None,
            request_id=new.request_id or None,
            facts=facts_to_json(new.facts),
            audience_limit=domain.audience_limit(new.kind, self.rules, grant),
            audience_size=0,
            quota_year=None,
            quota_returned=False,
            created_at=self.now,
            review_note="",
            delivered_count=0,
        )
        self.session.add(row)
        await self.session.flush()
        return DraftResult(row, replayed=False)

    async def append_audience(self, store_id: str, push_id: str, recipient_ids: Sequence[str]) -> int:
        """Adds recipients to a draft (a known one is skipped); refuses more than the limit."""
        row = await self._draft(store_id, push_id)
        # One statement with many parameter sets: compiled once (and cached), sent as multi-row
        # INSERTs within the drivers' bound-parameter limits. A ``values([...])`` statement is
        # compiled anew every time, bind parameter by bind parameter: about 0.1 s of CPU per 1,000
        # recipients, against the gateway's deadline for each call. RETURNING counts the rows really
        # inserted (a known recipient is skipped); asyncpg reports no rowcount for such batches.
        inserted = await self.session.execute(
            self._insert(audience).on_conflict_do_nothing().returning(audience.c.recipient_id),
            [{"store_id": store_id, "push_id": push_id, "recipient_id": r} for r in recipient_ids],
        )
        added = len(inserted.all())
        row.audience_size += added
        if row.audience_limit and row.audience_size > row.audience_limit:
            raise InvalidArgument.one(
                "recipient_ids", f"the audience would exceed its limit of {row.audience_limit} recipients"
            )
        await self.session.flush()
        return row.audience_size

    async def submit_draft(self, store_id: str, push_id: str) -> PushRow:
        """Spends the quota under the account's lock and submits the push for review (P6)."""
        await self.lock_account(store_id)
        row = await self._draft(store_id, push_id)
        kind = PushKind(row.kind)
        if row.audience_size == 0:
            raise RuleRefusal([domain.empty_audience(kind)])
        quota = await self.quota_state(store_id)
        year = domain.year_of(self.now, self.market)
        if kind is PushKind.SUBSCRIPTION:
            failures = domain.p1_interval(quota.last_subscription_at, self.now, self.rules)
        elif kind is PushKind.MASS_SEND:
            failures = await self._use_grant(store_id, row.grant_id or "", push_id)
        else:
            failures = domain.recall_quota(kind, quota.recall_used, self.now, self.rules, self.market)
            if not failures:
                # The key admits one row per (store, year, tier); the lock means no one else is inserting it.
                await self.session.execute(
                    recall_slots.insert().values(
                        store_id=store_id, year=year, kind=kind.value, push_id=push_id, spent_at=self.now
                    )
                )
        if failures:
            raise refusal(failures)
        row.state = PushState.PENDING_REVIEW.value
        row.submitted_at = self.now
        row.quota_year = year
        await self.session.flush()
        return row

    async def _use_grant(self, store_id: str, grant_id: str, push_id: str) -> list[Failure]:
        result = await self.session.execute(
            update(grants)
            .where(grants.c.store_id == store_id, grants.c.grant_id == grant_id, grants.c.push_id.is_(None))
            .values(push_id=push_id)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return []
        return domain.p5_grant(grant_id, await self.grant(store_id, grant_id))

    async def discard_draft(self, store_id: str, push_id: str) -> bool:
        row = await self._push(store_id, push_id, lock=True)
        if row is None or row.state != PushState.DRAFT:
            return False
        await self._drop_audience(store_id, push_id)
        row.state = PushState.DISCARDED.value
        row.request_id = None
        await self.session.flush()
        return True

    async def _drop_audience(self, store_id: str, push_id: str) -> None:
        await self.session.execute(
            delete(audience).where(audience.c.store_id == store_id, audience.c.push_id == push_id)
        )

    async def stale_draft_stores(self, older_than: timedelta, excluding: Collection[str], limit: int) -> list[str]:
        """Stores holding drafts a gateway abandoned (or discarded ones), oldest first; the clean-up settles
        each in its own transaction (SPEC D3), skipping the stores ``excluding`` names (backing off)."""
        oldest = func.min(pushes.c.created_at)
        stmt = (
            select(pushes.c.store_id)
            .where(pushes.c.state.in_([PushState.DRAFT.value, PushState.DISCARDED.value]))
            .where(pushes.c.created_at < self.now - older_than)
            .group_by(pushes.c.store_id)
            .order_by(oldest, pushes.c.store_id)
            .limit(limit)
        )
        if excluding:
            stmt = stmt.where(pushes.c.store_id.not_in(sorted(excluding)))
        return list(await self.session.scalars(stmt))

    async def purge_drafts(self, store_id: str, older_than: timedelta, limit: int) -> int:
        """Discards one store's drafts a gateway abandoned and deletes discarded ones; returns how many went."""
        cutoff = self.now - older_than
        stale = (
            (
                await self.session.execute(
                    select(pushes.c.push_id)
                    .where(pushes.c.store_id == store_id)
                    .where(pushes.c.state.in_([PushState.DRAFT.value, PushState.DISCARDED.value]))
                    .where(pushes.c.created_at < cutoff)
                    .order_by(pushes.c.created_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for push_id in stale:
            await self._drop_audience(store_id, push_id)
            await self.session.execute(delete(pushes).where(pushes.c.store_id == store_id, pushes.c.push_id == push_id))
        return len(stale)

    # -- review, cancellation (P6) ---------------------------------------------------------------

    async def _return_quota(self, row: PushRow) -> None:
        kind = PushKind(row.kind)
        if kind in domain.RECALL_KINDS:
            await self.session.execute(
                delete(recall_slots).where(
                    recall_slots.c.store_id == row.store_id, recall_slots.c.push_id == row.push_id
                )
            )
        elif kind is PushKind.MASS_SEND:
            await self.session.execute(
                update(grants)
                .where(grants.c.store_id == row.store_id, grants.c.push_id == row.push_id)
                .values(push_id=None)
            )
        row.quota_returned = True  # P1: a returned subscription push no longer starts the interval

    async def review(self, push_id: str, approve: bool, reviewer_id: str, note: str) -> Transition:
        store_id = await self.store_of(push_id)
        if store_id is None:
            raise NotFound("push", push_id)
        await self.lock_account(store_id)
        row = await self._push(store_id, push_id, lock=True)
        assert row is not None
        state = PushState(row.state)
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
        found = await self.store_of(push_id)
        if found is None or found != store_id:
            raise NotFound("push", push_id)
        await self.lock_account(store_id)
        row = await self._push(store_id, push_id, lock=True)
        assert row is not None
        state = PushState(row.state)
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
        if before is not None:
            at, last_id = before
            stmt = stmt.where(
                (PushRow.submitted_at < at) | ((PushRow.submitted_at == at) & (PushRow.push_id < last_id))
            )
        rows = list(
            await self.session.scalars(
                stmt.order_by(PushRow.submitted_at.desc(), PushRow.push_id.desc()).limit(limit + 1)
            )
        )
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more and rows else None
        return rows, (last.submitted_at, last.push_id) if last is not None and last.submitted_at else None

    # -- the review queue (P8) -----------------------------------------------------------------

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
        if after is not None:
            at, last_id = after
            # A row value comparison, which an index on (submitted_at, push_id) serves as one range.
            stmt = stmt.where(
                tuple_(PushRow.submitted_at, PushRow.push_id) > tuple_(literal(at, UtcDateTime()), literal(last_id))
            )
        rows = list(await self.session.scalars(stmt.order_by(PushRow.submitted_at, PushRow.push_id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more and rows else None
        return rows, (last.submitted_at, last.push_id) if last is not None and last.submitted_at else None

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

    # -- notices (P4) ------------------------------------------------------------------------

    async def observe(self, store_id: str, facts: AccountFacts) -> list[NoticeRow]:
        """Records a notice for each recall tier newly earned this year; the key makes it once."""
        quota = await self.quota_state(store_id)
        earned = domain.earned_tiers(facts, quota, self.now, self.rules, self.market)
        if not earned:
            return []
        year = domain.year_of(self.now, self.market)
        recorded: list[NoticeRow] = []
        for kind in earned:
            notice_id = new_id("nt")
            result = await self.session.execute(
                self._insert(notices)
                .values(
                    store_id=store_id,
                    notice_id=notice_id,
                    kind=kind.value,
                    year=year,
                    text=domain.notice_text(kind, year, self.rules),
                    created_at=self.now,
                )
                .on_conflict_do_nothing(index_elements=["store_id", "year", "kind"])
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                recorded.append(await self.session.get_one(NoticeRow, (store_id, notice_id)))
        return recorded

    async def list_notices(
        self, store_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[NoticeRow], tuple[datetime, str] | None]:
        stmt = select(NoticeRow).where(NoticeRow.store_id == store_id)
        if before is not None:
            at, last_id = before
            stmt = stmt.where(
                (NoticeRow.created_at < at) | ((NoticeRow.created_at == at) & (NoticeRow.notice_id < last_id))
            )
        rows = list(
            await self.session.scalars(
                stmt.order_by(NoticeRow.created_at.desc(), NoticeRow.notice_id.desc()).limit(limit + 1)
            )
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].created_at, rows[-1].notice_id) if more and rows else None

    # -- grants (P5) -------------------------------------------------------------------------

    async def grant_mass_send(
        self, store_id: str, audience_size: int, activity: str, granted_by: str, request_id: str
    ) -> tuple[GrantRow, bool]:
        if request_id:
            earlier = await self.session.scalar(
                select(GrantRow).where(GrantRow.store_id == store_id, GrantRow.request_id == request_id)
            )
            if earlier is not None:
                return earlier, False
        row = GrantRow(
            store_id=store_id,
            grant_id=new_id("gr"),
            audience_size=audience_size,
            activity=activity,
            granted_by=granted_by,
            granted_at=self.now,
            request_id=request_id or None,
            push_id=None,
        )
        self.session.add(row)
        await self.session.flush()
        return row, True

    # -- dispatch (P7) -------------------------------------------------------------------------

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
            written = int(result.rowcount or 0)  # type: ignore[attr-defined]
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

    # -- the delivery ledger (P7) -----------------------------------------------------------------

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


def refusal(failures: list[Failure]) -> RuleRefusal:
    """Only a spent quota is RESOURCE_EXHAUSTED; any unmet condition, FAILED_PRECONDITION."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED if domain.only_quota(failures) else grpc.StatusCode.FAILED_PRECONDITION
    return RuleRefusal(failures, code=code)
