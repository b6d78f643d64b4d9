"""Flash sales' end cards (M6) and results: the card is posted once, with the units sold, when the sale ends."""

from __future__ import annotations

from sqlalchemy import func, select, update

from services.campaigns.kinds import ActivityKind
from services.campaigns.models import Activity, EndCard, Purchase, StoreStream
from services.campaigns.repository import ActivityView, UnitOfWork
from services.common.bounds import joined_sum, saturated, split_sum
from services.common.errors import InvalidArgument
from services.common.validation import MAX_INT32


class EndCards(UnitOfWork):
    """End cards and flash-sale results of one store."""

    async def post(self, sale: Activity) -> tuple[EndCard, bool]:
        """M6 for a locked, ended flash sale: the card with the units sold, once; the next seq of the store."""
        if sale.end_card_posted:
            card = await self.session.scalar(
                select(EndCard).where(EndCard.store_id == sale.store_id, EndCard.activity_id == sale.activity_id)
            )
            assert card is not None
            return card, False
        units_high, units_low, count = (
            await self.session.execute(
                select(*split_sum(Purchase.quantity), func.count()).where(
                    Purchase.store_id == sale.store_id,
                    Purchase.flash_sale_id == sale.activity_id,
                    Purchase.cancelled_at.is_(None),
                )
            )
        ).one()
        units = saturated(joined_sum(units_high, units_low))  # the sale's units over any number of restocks
        await self.session.execute(
            self._insert(StoreStream)
            .values(store_id=sale.store_id, last_seq=0)
            .on_conflict_do_nothing(index_elements=[StoreStream.store_id])
        )
        seq = await self.session.scalar(
            update(StoreStream)
            .where(StoreStream.store_id == sale.store_id)
            .values(last_seq=StoreStream.last_seq + 1)
            .returning(StoreStream.last_seq)
        )
        card = EndCard(
            store_id=sale.store_id,
            seq=int(seq or 0),
            activity_id=sale.activity_id,
            group_set_id=sale.group_set_id,
            title=sale.title,
            item_id=sale.item_id or "",
            units_sold=units,
            purchases=saturated(int(count), MAX_INT32),
            ended_at=sale.ended_at or sale.ends_at,
            posted_at=self.now,
        )
        self.session.add(card)
        sale.end_card_posted = True
        await self.session.flush()
        return card, True

    async def end_card(self, store_id: str, activity_id: str) -> EndCard | None:
        return await self.session.scalar(
            select(EndCard).where(EndCard.store_id == store_id, EndCard.activity_id == activity_id)
        )

    async def list_end_cards(self, store_id: str, group_set_id: str, after_seq: int, limit: int) -> list[EndCard]:
        query = select(EndCard).where(EndCard.store_id == store_id, EndCard.seq > after_seq)
        if group_set_id:
            query = query.where(EndCard.group_set_id == group_set_id)
        return list(await self.session.scalars(query.order_by(EndCard.seq).limit(limit)))

    async def flash_sale_results(
        self, store_id: str, activity_id: str
    ) -> tuple[ActivityView, dict[str, int], EndCard | None]:
        view = await self.activity_view(store_id, activity_id)
        if view.activity.kind != ActivityKind.FLASH_SALE:
            raise InvalidArgument.one("activity_id", f"{activity_id} is a {view.activity.kind}, not a flash sale")
        # Units and revenue are totals over every purchase, whose number restocks leave unbounded (one
        # purchase's total fits: OVERFLOW_GUARDS): summed exactly, reported saturated (D2).
        units_high, units_low, count, buyers, revenue_high, revenue_low = (
            await self.session.execute(
                select(
                    *split_sum(Purchase.quantity),
                    func.count(),
                    func.count(func.distinct(Purchase.consumer_id)),
                    *split_sum(Purchase.total_fen),
                ).where(
                    Purchase.store_id == store_id,
                    Purchase.flash_sale_id == activity_id,
                    Purchase.cancelled_at.is_(None),
                )
            )
        ).one()
        item = await self.item(store_id, view.activity.item_id or "")
        figures = {
            "units_sold": saturated(joined_sum(units_high, units_low)),
            "purchases": saturated(int(count), MAX_INT32),
            "buyers": saturated(int(buyers), MAX_INT32),
            "revenue_fen": saturated(joined_sum(revenue_high, revenue_low)),
            "stock_left": item.stock,
        }
        return view, figures, await self.end_card(store_id, activity_id)
