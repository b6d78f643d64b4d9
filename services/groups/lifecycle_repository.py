"""Persistence of groups over time: daily counts, levels, expansion, sleeping members, audit, candidates.

Jobs settle one store at a time, each store in its own transaction (SPEC
D3), and are safe with several replicas: a store's day is claimed by its
``daily_member_counts`` row, a store's month by its ``job_settlements`` row,
each inserted in the transaction that settles the store, so a second replica
either waits on that key and then finds it taken, or finds it already there —
a store's period is settled once, and a store whose settlement failed has no
row and is tried again. The sleeping-customer job is state-based (notice,
then removal) and takes the same row locks as a leave, so running it twice,
or beside joins, changes nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from services.common.errors import NotFound, RuleRefusal
from services.common.inserts import dialect_insert
from services.groups import lifecycle
from services.groups import rules as domain
from services.groups.lifecycle import ExpansionFacts, MonthFigures, SleepingAction
from services.groups.members import Members
from services.groups.models import (
    CapacityGrant,
    CapacityOwner,
    DailyMemberCount,
    GroupLevel,
    GroupSet,
    JobSettlement,
    Membership,
    MonthlyMetrics,
    SleepingPlan,
)
from services.groups.records import RemovalRecord
from services.groups.repository import GroupsUnit, its_set
from services.groups.rules import GroupKind, RemovalCause
from services.groups.set_owners import owner_of

LEVEL_JOB = "levels"


@dataclass(frozen=True)
class LevelSettlement:
    """One store's level from one month's figures (T8), and the level it replaced for the next month."""

    store_id: str
    level: int
    avg_members: float
    previous: int | None


@dataclass(frozen=True)
class CapacityView:
    level: int
    members: int
    member_capacity: int
    group_sets: int
    group_set_capacity: int
    extra_members: int
    utilisation_bp: int
    history: tuple[tuple[str, int], ...]


class LifecycleRepository(GroupsUnit):
    """The lifecycle units of work, over the same session and locks as joins."""

    # -- jobs --------------------------------------------------------------------------------

    async def claim(self, job: str, period: str, store_id: str) -> bool:
        """True when this transaction is the one to settle ``store_id`` for ``job`` and ``period``."""
        try:
            async with self.session.begin_nested():
                self.session.add(JobSettlement(job=job, period=period, store_id=store_id, settled_at=self.now))
                await self.session.flush()
        except IntegrityError:
            return False
        return True

    async def stores_to_count(self, day: str) -> list[str]:
        """T7: the stores whose member count for ``day`` is not recorded yet."""
        counted = select(DailyMemberCount.store_id).where(DailyMemberCount.day == day)
        keys = await self.session.scalars(
            select(CapacityOwner.owner_key)
            .where(CapacityOwner.kind == str(GroupKind.STORE))
            .order_by(CapacityOwner.owner_key)
        )
        done = set(await self.session.scalars(counted))
        return [store for store in keys if store not in done]  # a store's owner key is its id

    async def record_daily_count(self, store_id: str, day: str) -> int | None:
        """T7: one store's member count for ``day``; None when that day was recorded already."""
        if await self.session.get(DailyMemberCount, (store_id, day)) is not None:
            return None
        owner = await self.session.get(CapacityOwner, domain.owner_key(GroupKind.STORE, store_id, ""))
        members = lifecycle.checked_count(store_id, owner.member_count if owner is not None else 0)
        try:
            async with self.session.begin_nested():
                self.session.add(DailyMemberCount(store_id=store_id, day=day, members=members))
                await self.session.flush()
        except IntegrityError:  # another replica counted it meanwhile
            return None
        return members

    async def record_monthly_metrics(self, store_id: str, month: str, figures: MonthFigures) -> LevelSettlement | None:
        """Upserts the month's figures (T8); when the level job had settled this store's month, recomputes it.

        Late (or corrected) figures are not lost: the level that holds from the
        next month is recomputed from them at once, audited old → new (X4).
        Figures for a month not settled yet wait for the job.
        """
        values = {
            "store_id": store_id,
            "month": month,
            "open_rate_bp": figures.open_rate_bp,
            "revisit_7d_bp": figures.revisit_7d_bp,
            "conversion_bp": figures.conversion_bp,
            "merchant_messages": figures.merchant_messages,
        }
        stmt = dialect_insert(self.session.get_bind().dialect, MonthlyMetrics).values(**values)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[MonthlyMetrics.store_id, MonthlyMetrics.month],
                set_={k: stmt.excluded[k] for k in values if k not in ("store_id", "month")},
            )
        )
        if await self.session.get(JobSettlement, (store_id, LEVEL_JOB, month)) is None:
            return None
        return await self.settle_level(store_id, month, recompute=True)

    async def stores_to_level(self, month: str, *, recompute: bool = False) -> list[str]:
        """T8: the stores with figures for ``month`` (daily counts or reported metrics) not settled yet.

        With ``recompute``, every store with figures, settled or not.
        """
        days = lifecycle.days_of(month)
        counted = set(
            await self.session.scalars(
                select(DailyMemberCount.store_id).where(DailyMemberCount.day.between(days[0], days[-1])).distinct()
            )
        )
        reported = set(await self.session.scalars(select(MonthlyMetrics.store_id).where(MonthlyMetrics.month == month)))
        stores = counted | reported
        if not recompute:
            stores -= set(
                await self.session.scalars(
                    select(JobSettlement.store_id).where(JobSettlement.job == LEVEL_JOB, JobSettlement.period == month)
                )
            )
        return sorted(stores)

    async def month_figures(self, store_id: str, month: str) -> MonthFigures:
        """The store's figures for ``month`` (T7's average and the reported metrics), checked against their bounds."""
        days = lifecycle.days_of(month)
        counts = {
            day: members
            for day, members in await self.session.execute(
                select(DailyMemberCount.day, DailyMemberCount.members).where(
                    DailyMemberCount.store_id == store_id, DailyMemberCount.day.between(days[0], days[-1])
                )
            )
        }
        reported = await self.session.get(MonthlyMetrics, (store_id, month), populate_existing=True)
        figures = MonthFigures(
            avg_members=lifecycle.monthly_average(counts, month),
            open_rate_bp=reported.open_rate_bp if reported else 0,
            revisit_7d_bp=reported.revisit_7d_bp if reported else 0,
            conversion_bp=reported.conversion_bp if reported else 0,
            merchant_messages=reported.merchant_messages if reported else 0,
        )
        return lifecycle.checked_figures(self.rules, figures)

    async def settle_level(self, store_id: str, month: str, *, recompute: bool = False) -> LevelSettlement | None:
        """T8: one store's level from ``month``'s figures, holding from the next month.

        None when this store's month was settled already (by another replica or
        an earlier run), unless ``recompute``: then it is computed again and the
        change is audited as ``level.recompute`` (X4).
        """
        first = await self.claim(LEVEL_JOB, month, store_id)
        if not first and not recompute:
            return None
        figures = await self.month_figures(store_id, month)
        level = lifecycle.level_for(self.rules, figures)
        previous = await self.set_group_level(
            store_id, lifecycle.shift_month(month, 1), level, action="level" if first else "level.recompute"
        )
        return LevelSettlement(store_id, level, figures.avg_members, previous)

    # -- capacity (T2, T3) -------------------------------------------------------------------

    async def _levels_by_month(self, store_id: str, months: Sequence[str]) -> dict[str, int]:
        """The level in force in each month: its own record, else the latest earlier one, else L0."""
        rows = list(
            await self.session.execute(
                select(GroupLevel.month, GroupLevel.level)
                .where(GroupLevel.store_id == store_id, GroupLevel.month <= max(months))
                .order_by(GroupLevel.month)
            )
        )
        result: dict[str, int] = {}
        for month in months:
            earlier = [level for recorded, level in rows if recorded <= month]
            result[month] = earlier[-1] if earlier else 0
        return result

    async def capacity(self, store_id: str) -> CapacityView:
        owner = await self.session.get(CapacityOwner, domain.owner_key(GroupKind.STORE, store_id, ""))
        level = await self.store_level(store_id)
        members = owner.member_count if owner else 0
        extra = owner.extra_members if owner else 0
        limits = domain.account_limits(self.rules, GroupKind.STORE, level, extra)
        history = tuple(
            (m, lv)
            for m, lv in await self.session.execute(
                select(GroupLevel.month, GroupLevel.level)
                .where(GroupLevel.store_id == store_id)
                .order_by(GroupLevel.month.desc())
                .limit(24)
            )
        )
        return CapacityView(
            level=level,
            members=members,
            member_capacity=limits.members,
            group_sets=owner.group_set_count if owner else 0,
            group_set_capacity=limits.group_sets,
            extra_members=extra,
            utilisation_bp=lifecycle.utilisation_bp(self.rules, members, level),
            history=history,
        )

    async def apply_for_expansion(self, store_id: str) -> tuple[CapacityView, int]:
        """T3, under the store's lock so two applications cannot both pass the 500,000 check.

        Returns the capacity after the grant and the members granted: 50,000, or
        what was left under the cap for the last application.
        """
        key = domain.owner_key(GroupKind.STORE, store_id, "")
        await self._ensure_owner(key, GroupKind.STORE)
        owner = await self._lock_owner(key)
        month = lifecycle.month_key(self.now, self.rules.calendar.market)
        earlier = lifecycle.recent_months(month, self.rules.expansion.consecutive_months)
        facts = ExpansionFacts(
            month=month,
            levels_by_month=await self._levels_by_month(store_id, earlier),
            level_now=await self.store_level(store_id),
            members=owner.member_count,
            extra_members=owner.extra_members,
        )
        failures = lifecycle.expansion_failures(self.rules, facts)
        if failures:
            raise RuleRefusal(failures)
        grant = lifecycle.expansion_grant(self.rules, facts.level_now, owner.extra_members)
        seq = (
            await self.session.scalar(select(func.max(CapacityGrant.seq)).where(CapacityGrant.store_id == store_id))
            or 0
        ) + 1
        self.session.add(CapacityGrant(store_id=store_id, seq=seq, members=grant, granted_at=self.now))
        before = lifecycle.capacity(self.rules, facts.level_now, owner.extra_members)
        owner.extra_members += grant
        after = lifecycle.capacity(self.rules, facts.level_now, owner.extra_members)
        self.audit(key, "capacity.grant", store_id, str(before), str(after))
        await self.session.flush()
        return await self.capacity(store_id), grant

    # -- sleeping customers (C15, X5) --------------------------------------------------------

    async def set_sleeping_plan(self, store_id: str, enabled: bool, inactivity_days: int) -> SleepingPlan:
        plan = await self.session.get(SleepingPlan, store_id, with_for_update=True)
        old = "off" if plan is None or not plan.enabled else f"on, {plan.inactivity_days} days"
        if plan is None:
            plan = SleepingPlan(store_id=store_id, enabled=enabled, inactivity_days=inactivity_days)
            self.session.add(plan)
        else:
            plan.enabled, plan.inactivity_days = enabled, inactivity_days
        new = f"on, {inactivity_days} days" if enabled else "off"
        self.audit(domain.owner_key(GroupKind.STORE, store_id, ""), "sleeping_plan", store_id, old, new)
        await self.session.flush()
        return plan

    async def record_activity(self, group_set_id: str, consumer_id: str, at: datetime) -> None:
        """Activity moves the member's last-active time forward and clears a notice (X5)."""
        key = await owner_of(self.session, group_set_id)
        member = (
            None
            if key is None
            else await self.session.get(Membership, (key, group_set_id, consumer_id), with_for_update=True)
        )
        if member is None:
            raise NotFound("membership", f"{group_set_id}/{consumer_id}")
        if member.last_active_at is None or at > member.last_active_at:
            member.last_active_at = at
        if member.notified_at is not None and at >= member.notified_at:
            member.notified_at = None
        await self.session.flush()

    async def sleeping_stores(self) -> list[str]:
        """The stores whose sleeping-customer plan is on (C15)."""
        return list(
            await self.session.scalars(
                select(SleepingPlan.store_id).where(SleepingPlan.enabled.is_(True)).order_by(SleepingPlan.store_id)
            )
        )

    async def sleeping_candidates(self, store_id: str) -> list[tuple[str, str, int]]:
        """(group-set, consumer, window) of the store's members past its inactivity window, or under notice."""
        plan = await self.session.get(SleepingPlan, store_id)
        if plan is None or not plan.enabled:
            return []
        cutoff = self.now - timedelta(days=plan.inactivity_days)
        rows = await self.session.execute(
            select(Membership.group_set_id, Membership.consumer_id)
            .join(GroupSet, its_set(Membership))
            .where(
                GroupSet.owner_key == domain.owner_key(GroupKind.STORE, store_id, ""),
                GroupSet.dissolved_at.is_(None),
                or_(
                    Membership.notified_at.is_not(None),
                    func.coalesce(Membership.last_active_at, Membership.joined_at) <= cutoff,
                ),
            )
            .order_by(Membership.group_set_id, Membership.consumer_id)
        )
        return [(group_set_id, consumer_id, plan.inactivity_days) for group_set_id, consumer_id in rows]

    async def sleep_member(
        self, group_set_id: str, consumer_id: str, inactivity_days: int
    ) -> tuple[SleepingAction, RemovalRecord | None]:
        """Applies C15/X5 to one member under the same locks as a leave; a removal is kept for the member (R5)."""
        key = await self._owner_key_of(group_set_id)
        await self._lock_owner(key)
        await self._lock_set(key, group_set_id)
        member = await self.session.get(Membership, (key, group_set_id, consumer_id), populate_existing=True)
        if member is None:
            return SleepingAction.KEEP, None
        action = lifecycle.sleeping_action(
            self.rules,
            last_active_at=member.last_active_at or member.joined_at,
            notified_at=member.notified_at,
            inactivity_days=inactivity_days,
            now=self.now,
        )
        if action is SleepingAction.NOTIFY:
            member.notified_at = self.now
            await self.session.flush()
            return action, None
        if action is SleepingAction.REMOVE:
            reason = (
                f"inactive for {inactivity_days} days, and still inactive "
                f"{self.rules.sleeping.notice_days} days after the notice (C15, X5)"
            )
            removal, _ = await self.along(Members).expel(
                group_set_id, consumer_id, RemovalCause.SLEEPING, reason=reason
            )
            return action, removal
        return action, None
