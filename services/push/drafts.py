"""Submission (P1, P2, P5, P6): a draft checked against every rule, its audience, then the seal that spends the quota.

The seal runs under the store's ``push_accounts`` lock; the recall slot's key and the grant's conditional
update refuse what the lock should already prevent. Drafts a gateway abandoned are cleaned up store by store.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from services.common.errors import Failure, InvalidArgument, NotFound, RuleRefusal
from services.common.ids import new_id
from services.common.request_ids import check_same_request, request_fingerprint
from services.push import rules as domain
from services.push.kinds import Quota, declaration
from services.push.models import (
    PushRow,
)
from services.push.repository import (
    PushUnit,
    audience,
    facts_to_json,
    grants,
    pushes,
    recall_slots,
    refusal,
)
from services.push.rules import AccountFacts, PushKind, PushState


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


def draft_fingerprint(new: NewDraft) -> str:
    """What makes two submissions the same: what the account asks (the figures are read anew at each call)."""
    return request_fingerprint(
        account_id=new.account_id, kind=new.kind, title=new.title, body=new.body, grant_id=new.grant_id
    )


class Drafts(PushUnit):
    """Drafts of one store: opened, filled, sealed, discarded."""

    async def _draft(self, store_id: str, push_id: str) -> PushRow:
        row = await self.push(store_id, push_id, lock=True)
        if row is None or row.state != PushState.DRAFT:
            raise NotFound("draft", push_id)
        return row

    async def create_draft(self, new: NewDraft) -> DraftResult:
        """Checks every rule for this kind now (refusing with all of them) and opens a draft."""
        fingerprint = draft_fingerprint(new)
        if new.request_id:
            earlier = await self.session.scalar(
                select(PushRow).where(PushRow.store_id == new.store_id, PushRow.request_id == new.request_id)
            )
            if earlier is not None:
                check_same_request(new.request_id, earlier.request_fingerprint, fingerprint, "push")
                return DraftResult(earlier, replayed=earlier.state != PushState.DRAFT)
        quota = await self.quota_state(new.store_id)
        grant = await self.grant(new.store_id, new.grant_id) if declaration(new.kind).takes_grant else None
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
            request_fingerprint=fingerprint if new.request_id else None,
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
        # INSERTs within the drivers' bound-parameter limits, never a ``values([...])`` statement compiled
        # anew for each call (docs/adr/0006-hot-paths-off-the-orm.md). RETURNING counts the rows really
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
        spends = declaration(kind).quota
        if spends is Quota.INTERVAL:
            failures = domain.p1_interval(quota.last_subscription_at, self.now, self.rules)
        elif spends is Quota.GRANT:
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
        if result.rowcount == 1:  # type: ignore[attr-defined]  # a DML result has a rowcount; Result is typed without it
            return []
        return domain.p5_grant(grant_id, await self.grant(store_id, grant_id))

    async def discard_draft(self, store_id: str, push_id: str) -> bool:
        row = await self.push(store_id, push_id, lock=True)
        if row is None or row.state != PushState.DRAFT:
            return False
        await self._drop_audience(store_id, push_id)
        row.state = PushState.DISCARDED.value
        row.request_id = None
        row.request_fingerprint = None
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
