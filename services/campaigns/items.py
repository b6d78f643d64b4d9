"""Items and their stock (M2, D2): upstream's item facts, restocks, and the purchases' reads and cancellation.

Stock moves only by a purchase (``orders``), a restock and a cancellation,
each under a request id; the conditional updates here are the guards of D2
(no restock past ``bounds.stock``) and of the column's ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from services.campaigns import rules as domain
from services.campaigns.models import STOCK_CEILING, Claim, Item, Purchase, Restock
from services.campaigns.repository import UnitOfWork
from services.campaigns.rules import ClaimState, Platform
from services.common.errors import NotFound, RuleRefusal
from services.common.keysets import keyset_page
from services.common.request_ids import check_same_request, request_fingerprint


@dataclass(frozen=True)
class ItemUpdate:
    store_id: str
    item_id: str
    platform: Platform
    sku_count: int
    price_min_fen: int
    price_max_fen: int
    initial_stock: int


class Items(UnitOfWork):
    """Items, stock and purchases of one store."""

    async def upsert_item(self, update_: ItemUpdate) -> tuple[Item, bool]:
        """A new item starts with its initial stock; a known item's facts change, its stock does not."""
        inserted = await self.session.scalar(
            self._insert(Item)
            .values(
                store_id=update_.store_id,
                item_id=update_.item_id,
                platform=str(update_.platform),
                sku_count=update_.sku_count,
                price_min_fen=update_.price_min_fen,
                price_max_fen=update_.price_max_fen,
                stock=update_.initial_stock,
                created_at=self.now,
                updated_at=self.now,
            )
            .on_conflict_do_nothing(index_elements=[Item.store_id, Item.item_id])
            .returning(Item.item_id)
        )
        if inserted is None:
            await self.session.execute(
                update(Item)
                .where(Item.store_id == update_.store_id, Item.item_id == update_.item_id)
                .values(
                    platform=str(update_.platform),
                    sku_count=update_.sku_count,
                    price_min_fen=update_.price_min_fen,
                    price_max_fen=update_.price_max_fen,
                    updated_at=self.now,
                )
            )
        return await self.item(update_.store_id, update_.item_id), inserted is not None

    async def restock(self, request_id: str, store_id: str, item_id: str, quantity: int) -> tuple[Item, bool]:
        """Adds stock once per request id; a concurrent duplicate waits on the key and then adds nothing.

        D2: the stock never passes ``bounds.stock``. The update adds only where
        ``stock <= bounds.stock - quantity`` (written so, the comparison itself
        cannot overflow); otherwise the restock is refused with ``STOCK_LIMIT``
        and the transaction rolls back, the restock row with it, so a retry with
        the same request id is judged afresh and nothing was written.
        """
        fingerprint = request_fingerprint(item_id=item_id, quantity=quantity)
        recorded = await self.session.scalar(
            self._insert(Restock)
            .values(
                store_id=store_id,
                request_id=request_id,
                request_fingerprint=fingerprint,
                item_id=item_id,
                quantity=quantity,
                created_at=self.now,
            )
            .on_conflict_do_nothing(index_elements=[Restock.store_id, Restock.request_id])
            .returning(Restock.request_id)
        )
        if recorded is None:
            earlier = await self.session.get(Restock, (store_id, request_id), populate_existing=True)
            assert earlier is not None
            check_same_request(request_id, earlier.request_fingerprint, fingerprint, "restock")
            return await self.item(store_id, item_id), True
        most = self.rules.bounds.stock
        stock = await self.session.scalar(
            update(Item)
            .where(Item.store_id == store_id, Item.item_id == item_id, Item.stock <= most - quantity)
            .values(stock=Item.stock + quantity, updated_at=self.now)
            .returning(Item.stock)
        )
        if stock is None:
            current = await self.item(store_id, item_id)  # NOT_FOUND when there is no such item
            raise RuleRefusal(domain.stock_limit_failures(current.stock, quantity, most))
        return await self.item(store_id, item_id), False

    # -- purchases (M2; PriceOrder and Purchase are in ``orders``) ------------------------------

    async def get_purchase(self, store_id: str, purchase_id: str) -> Purchase:
        row = await self.session.get(Purchase, (store_id, purchase_id), populate_existing=True)
        if row is None:
            raise NotFound("purchase", f"{store_id}/{purchase_id}")
        return row

    async def list_sales(
        self,
        store_id: str,
        *,
        item_id: str,
        flash_sale_id: str,
        consumer_id: str,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> tuple[list[Purchase], tuple[datetime, str] | None]:
        query = select(Purchase).where(Purchase.store_id == store_id)
        if item_id:
            query = query.where(Purchase.item_id == item_id)
        if flash_sale_id:
            query = query.where(Purchase.flash_sale_id == flash_sale_id)
        if consumer_id:
            query = query.where(Purchase.consumer_id == consumer_id)
        return await keyset_page(self.session, query, Purchase.created_at, Purchase.purchase_id, after, limit)

    async def cancel_purchase(self, request_id: str, store_id: str, purchase_id: str) -> tuple[Purchase, int, bool]:
        """The quantity goes back to stock and the prizes to the wallet, once.

        The request id's scope is the purchase, which is the whole of what the
        request asks: any later cancellation of it answers as the first did.
        """
        query = select(Purchase).where(Purchase.store_id == store_id, Purchase.purchase_id == purchase_id)
        row = await self.found(query.with_for_update(), "purchase", f"{store_id}/{purchase_id}")
        if row.cancelled_at is not None:
            return row, (await self.item(store_id, row.item_id)).stock, True
        row.cancelled_at = self.now
        row.cancel_request_id = request_id
        # The quantity goes back even past ``bounds.stock`` (restocks since the sale may have filled it): the
        # units exist. Only the column's own ceiling (``STOCK_CEILING``, far above any reachable stock) refuses.
        stock = await self.session.scalar(
            update(Item)
            .where(Item.store_id == store_id, Item.item_id == row.item_id, Item.stock <= STOCK_CEILING - row.quantity)
            .values(stock=Item.stock + row.quantity, updated_at=self.now)
            .returning(Item.stock)
        )
        if stock is None:
            current = await self.item(store_id, row.item_id)
            raise RuleRefusal(domain.stock_limit_failures(current.stock, row.quantity, STOCK_CEILING))
        ids = [*row.cash_red_packet_ids, *row.store_coupon_ids]
        if ids:
            await self.session.execute(
                update(Claim)
                .where(Claim.store_id == store_id, Claim.claim_id.in_(ids), Claim.used_purchase_id == purchase_id)
                .values(state=str(ClaimState.HELD), used_purchase_id=None, settled_at=None)
                .execution_options(synchronize_session=False)
            )
        await self.session.flush()
        return row, int(stock or 0), False
