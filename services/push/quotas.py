"""Recall chances earned (P4 notices, once per store, year and tier by their key) and mass-send grants (P5)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from services.common.ids import new_id
from services.common.keysets import keyset_page
from services.common.request_ids import check_same_request, request_fingerprint
from services.push import rules as domain
from services.push.models import (
    GrantRow,
    NoticeRow,
)
from services.push.repository import (
    PushUnit,
    notices,
)
from services.push.rules import AccountFacts


class Quotas(PushUnit):
    """Notices and grants of one store."""

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
            if result.rowcount == 1:  # type: ignore[attr-defined]  # a DML result has a rowcount; Result is typed without it
                recorded.append(await self.session.get_one(NoticeRow, (store_id, notice_id)))
        return recorded

    async def list_notices(
        self, store_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[NoticeRow], tuple[datetime, str] | None]:
        stmt = select(NoticeRow).where(NoticeRow.store_id == store_id)
        return await keyset_page(
            self.session, stmt, NoticeRow.created_at, NoticeRow.notice_id, before, limit, newest_first=True
        )

    async def grant_mass_send(
        self, store_id: str, audience_size: int, activity: str, granted_by: str, request_id: str
    ) -> tuple[GrantRow, bool]:
        fingerprint = request_fingerprint(audience_size=audience_size, activity=activity, granted_by=granted_by)
        if request_id:
            earlier = await self.session.scalar(
                select(GrantRow).where(GrantRow.store_id == store_id, GrantRow.request_id == request_id)
            )
            if earlier is not None:
                check_same_request(request_id, earlier.request_fingerprint, fingerprint, "grant")
                return earlier, False
        row = GrantRow(
            store_id=store_id,
            grant_id=new_id("gr"),
            audience_size=audience_size,
            activity=activity,
            granted_by=granted_by,
            granted_at=self.now,
            request_id=request_id or None,
            request_fingerprint=fingerprint if request_id else None,
            push_id=None,
        )
        self.session.add(row)
        await self.session.flush()
        return row, True
