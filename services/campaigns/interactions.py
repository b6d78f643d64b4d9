"""Member interactions with a running activity: one vote per member (voting), one check-in a day (M13)."""

from __future__ import annotations

from sqlalchemy import func, select

from services.campaigns import rules as domain
from services.campaigns.kinds import ActivityKind
from services.campaigns.models import Activity, CheckIn, Vote
from services.campaigns.repository import UnitOfWork, window_of
from services.common.errors import Failure, InvalidArgument, RuleRefusal


class Interactions(UnitOfWork):
    """Votes and check-ins of one store."""

    async def _interaction(self, store_id: str, activity_id: str, kind: ActivityKind, group_member: bool) -> Activity:
        activity = await self.activity(store_id, activity_id)
        if activity.kind != kind:
            raise InvalidArgument.one("activity_id", f"{activity_id} is a {activity.kind}, not a {kind}")
        failures = domain.membership_failures(kind, group_member)
        failures += domain.running_failures(kind, window_of(activity), activity.ended_at, self.now)
        if failures:
            raise RuleRefusal(failures)
        return activity

    async def vote(
        self, store_id: str, activity_id: str, consumer_id: str, option_index: int, *, group_member: bool
    ) -> tuple[list[int], int]:
        activity = await self._interaction(store_id, activity_id, ActivityKind.VOTING, group_member)
        options = activity.options or []
        if not 0 <= option_index < len(options):
            raise InvalidArgument.one("option_index", f"must be between 0 and {len(options) - 1}, got {option_index}")
        await self.session.execute(
            self._insert(Vote)
            .values(
                store_id=store_id,
                activity_id=activity_id,
                consumer_id=consumer_id,
                option_index=option_index,
                created_at=self.now,
            )
            .on_conflict_do_nothing(index_elements=[Vote.store_id, Vote.activity_id, Vote.consumer_id])
        )
        mine = await self.session.scalar(
            select(Vote.option_index).where(
                Vote.store_id == store_id, Vote.activity_id == activity_id, Vote.consumer_id == consumer_id
            )
        )
        if mine != option_index:
            raise RuleRefusal(
                [
                    Failure(
                        "M13",
                        "ALREADY_VOTED",
                        f"one vote per member; yours is option {mine}",
                        {"option_index": str(mine)},
                    )
                ]
            )
        counts = dict(
            (
                await self.session.execute(
                    select(Vote.option_index, func.count())
                    .where(Vote.store_id == store_id, Vote.activity_id == activity_id)
                    .group_by(Vote.option_index)
                )
            ).all()
        )
        return [int(counts.get(i, 0)) for i in range(len(options))], option_index

    async def check_in(
        self, store_id: str, activity_id: str, consumer_id: str, *, group_member: bool
    ) -> tuple[str, int, bool]:
        await self._interaction(store_id, activity_id, ActivityKind.CHECK_IN, group_member)
        day = domain.market_day(self.rules, self.now)
        inserted = await self.session.scalar(
            self._insert(CheckIn)
            .values(store_id=store_id, activity_id=activity_id, consumer_id=consumer_id, day=day, created_at=self.now)
            .on_conflict_do_nothing(
                index_elements=[CheckIn.store_id, CheckIn.activity_id, CheckIn.consumer_id, CheckIn.day]
            )
            .returning(CheckIn.day)
        )
        days = await self.session.scalar(
            select(func.count()).where(
                CheckIn.store_id == store_id, CheckIn.activity_id == activity_id, CheckIn.consumer_id == consumer_id
            )
        )
        return day, int(days or 0), inserted is None
