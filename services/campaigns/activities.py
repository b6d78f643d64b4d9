"""Activities of every kind and their trumpets: creation under the group-set's slot lock (M1, M11), ends, reads.

A creation locks the group-set's slot row (``SELECT … FOR UPDATE``) and
counts the overlapping activities under it, so M11 holds across replicas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from services.campaigns import rules as domain
from services.campaigns.end_cards import EndCards
from services.campaigns.kinds import ActivityKind, NewPool, declaration
from services.campaigns.models import Activity, EndCard, GroupSlot, Pool, Trumpet
from services.campaigns.repository import ActivityView, Lock, UnitOfWork, has_ended, item_facts, window_of
from services.common.errors import Failure, RuleRefusal
from services.common.ids import new_id
from services.common.keysets import keyset_page
from services.common.request_ids import check_same_request, request_fingerprint


@dataclass(frozen=True)
class NewActivity:
    request_id: str
    store_id: str
    group_set_id: str
    created_by: str
    kind: ActivityKind
    title: str
    window: domain.Window
    item_id: str = ""
    price_fen: int = 0
    group_size: int = 0
    options: tuple[str, ...] = ()
    pools: tuple[NewPool, ...] = ()


@dataclass(frozen=True)
class NewTrumpet:
    request_id: str
    store_id: str
    activity_id: str
    sub_group_id: str
    on_sub_group: bool
    group_level: int
    display_starts_at: datetime
    message: str
    created_by: str


def activity_fingerprint(new: NewActivity) -> str:
    """What makes two CreateActivity requests the same: every field but the id."""
    return request_fingerprint(activity=dataclasses.replace(new, request_id=""))


def trumpet_fingerprint(new: NewTrumpet) -> str:
    """What makes two CreateTrumpet requests the same: what the caller chose (the level is read at each call)."""
    return request_fingerprint(
        activity_id=new.activity_id,
        sub_group_id=new.sub_group_id,
        display_starts_at=new.display_starts_at,
        message=new.message,
        created_by=new.created_by,
    )


class Activities(UnitOfWork):
    """The activities of one store."""

    async def activity_view(self, store_id: str, activity_id: str) -> ActivityView:
        row = await self.activity(store_id, activity_id)
        return ActivityView(row, tuple(await self.pools(store_id, activity_id)))

    async def list_activities(
        self, store_id: str, group_set_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[ActivityView], tuple[datetime, str] | None]:
        query = select(Activity).where(Activity.store_id == store_id)
        if group_set_id:
            query = query.where(Activity.group_set_id == group_set_id)
        rows, cursor = await keyset_page(self.session, query, Activity.created_at, Activity.activity_id, after, limit)
        pools: dict[str, list[Pool]] = {r.activity_id: [] for r in rows}
        if rows:
            for p in await self.session.scalars(
                select(Pool)
                .where(Pool.store_id == store_id, Pool.activity_id.in_(list(pools)))
                .order_by(Pool.activity_id, Pool.seq)
            ):
                pools[p.activity_id].append(p)
        views = [ActivityView(r, tuple(pools[r.activity_id])) for r in rows]
        return views, cursor

    async def running_group_buy(self, store_id: str, item_id: str) -> str | None:
        """V3: the group buy of this item running now (the earliest to end), if any."""
        return await self.session.scalar(
            select(Activity.activity_id)
            .where(
                Activity.store_id == store_id,
                Activity.item_id == item_id,
                Activity.kind == str(ActivityKind.GROUP_BUY),
                Activity.ended_at.is_(None),
                Activity.starts_at <= self.now,
                Activity.ends_at > self.now,
            )
            .order_by(Activity.ends_at, Activity.activity_id)
            .limit(1)
        )

    async def _activity_by_request(self, store_id: str, request_id: str) -> Activity | None:
        return await self.session.scalar(
            select(Activity)
            .where(Activity.store_id == store_id, Activity.request_id == request_id)
            .execution_options(populate_existing=True)
        )

    async def create_activity(self, new: NewActivity) -> tuple[ActivityView, int, bool]:
        """M1 for flash sales, then M11 under the group-set's slot lock; returns (view, at once, created)."""
        if new.request_id:
            earlier = await self._activity_by_request(new.store_id, new.request_id)
            if earlier is not None:
                return await self._replayed_activity(earlier, new), 0, False
        failures: list[Failure] = []
        declared = declaration(new.kind)
        if declared.sells_item:
            item = await self.item(new.store_id, new.item_id)
            if declared.one_price_item:
                failures += domain.flash_sale_item_failures(item_facts(item))
        await self.session.execute(
            self._insert(GroupSlot)
            .values(store_id=new.store_id, group_set_id=new.group_set_id, created_at=self.now)
            .on_conflict_do_nothing(index_elements=[GroupSlot.store_id, GroupSlot.group_set_id])
        )
        await self.session.execute(
            select(GroupSlot.store_id)
            .where(GroupSlot.store_id == new.store_id, GroupSlot.group_set_id == new.group_set_id)
            .with_for_update()
        )
        if new.request_id:  # a concurrent replay may have committed while we waited for the lock
            earlier = await self._activity_by_request(new.store_id, new.request_id)
            if earlier is not None:
                return await self._replayed_activity(earlier, new), 0, False
        counted = domain.Window(max(new.window.starts_at, self.now), new.window.ends_at)
        rows = await self.session.execute(
            select(Activity.starts_at, Activity.ends_at).where(
                Activity.store_id == new.store_id,
                Activity.group_set_id == new.group_set_id,
                Activity.ended_at.is_(None),
                Activity.ends_at > counted.starts_at,
                Activity.starts_at < counted.ends_at,
            )
        )
        cap_failures, at_once = domain.activity_cap_failures(
            self.rules, [domain.Window(r.starts_at, r.ends_at) for r in rows], counted
        )
        failures += cap_failures
        if failures:
            raise RuleRefusal(failures)
        row = Activity(
            store_id=new.store_id,
            activity_id=new_id("act"),
            group_set_id=new.group_set_id,
            kind=str(new.kind),
            title=new.title,
            starts_at=new.window.starts_at,
            ends_at=new.window.ends_at,
            ended_at=None,
            created_by=new.created_by,
            created_at=self.now,
            request_id=new.request_id or None,
            request_fingerprint=activity_fingerprint(new) if new.request_id else None,
            item_id=new.item_id or None,
            price_fen=new.price_fen or None,
            group_size=new.group_size or None,
            options=list(new.options) or None,
            end_card_posted=False,
        )
        self.session.add(row)
        pools = [
            Pool(
                store_id=new.store_id,
                pool_id=new_id("pool"),
                activity_id=row.activity_id,
                seq=i + 1,
                kind=str(p.kind),
                value_fen=p.value_fen,
                count=p.count,
                remaining=p.count,
                per_user_limit=p.per_user_limit,
                expires_at=p.expires_at,
                remainder_refunded=False,
            )
            for i, p in enumerate(new.pools)
        ]
        self.session.add_all(pools)
        await self.session.flush()
        return ActivityView(row, tuple(pools)), at_once, True

    async def _replayed_activity(self, earlier: Activity, new: NewActivity) -> ActivityView:
        check_same_request(new.request_id, earlier.request_fingerprint, activity_fingerprint(new), "activity")
        return ActivityView(earlier, tuple(await self.pools(earlier.store_id, earlier.activity_id)))

    async def end_activity(self, store_id: str, activity_id: str) -> tuple[ActivityView, EndCard | None, bool]:
        """Ends it now (a no-op when it already ended); a flash sale's end card is posted once (M6)."""
        row = await self.activity(store_id, activity_id, lock=Lock.UPDATE)
        if row.ended_at is None and self.now < row.ends_at:
            row.ended_at = self.now
        card, posted = None, False
        if declaration(row.kind).end_card:
            card, posted = await self.along(EndCards).post(row)
        await self.session.flush()
        return ActivityView(row, tuple(await self.pools(store_id, activity_id))), card, posted

    async def create_trumpet(self, new: NewTrumpet) -> tuple[Trumpet, bool]:
        if new.request_id:
            earlier = await self.session.scalar(
                select(Trumpet).where(Trumpet.store_id == new.store_id, Trumpet.request_id == new.request_id)
            )
            if earlier is not None:
                check_same_request(new.request_id, earlier.request_fingerprint, trumpet_fingerprint(new), "trumpet")
                return earlier, True
        activity = await self.activity(new.store_id, new.activity_id)
        failures = domain.trumpet_failures(
            self.rules,
            group_level=new.group_level,
            on_sub_group=new.on_sub_group,
            activity=window_of(activity),
            activity_ended_at=activity.ended_at,
            display_starts_at=new.display_starts_at,
        )
        if failures:
            raise RuleRefusal(failures)
        row = Trumpet(
            store_id=new.store_id,
            trumpet_id=new_id("tr"),
            activity_id=activity.activity_id,
            group_set_id=activity.group_set_id,
            sub_group_id=new.sub_group_id,
            message=new.message,
            display_starts_at=new.display_starts_at,
            created_by=new.created_by,
            request_id=new.request_id or None,
            request_fingerprint=trumpet_fingerprint(new) if new.request_id else None,
            created_at=self.now,
        )
        self.session.add(row)
        await self.session.flush()
        return row, False

    async def activities_still_running(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (store, activity) are running now (for the stock gauges)."""
        running: set[tuple[str, str]] = set()
        for store_id, activity_id in keys:
            row = await self.session.get(Activity, (store_id, activity_id), populate_existing=True)
            if row is not None and not has_ended(row, self.now):
                running.add((store_id, activity_id))
        return running
