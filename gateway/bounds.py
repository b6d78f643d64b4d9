"""D2 at the door: every number and list of the public API has a bound, checked before any backend is called.

The bounds' values live in the rules file (``[bounds]``, ``services.common.rules.BoundsRules``),
where the loader proves that the totals the services compute from them fit a
signed 64-bit integer. This module says which bound each public field has
(``VALUE_LIMITS`` for numbers, ``COUNT_LIMITS`` for repeated fields); a test
walks every public request message and fails on a number or list without one.
``python -m gateway.bounds`` prints the API reference's table of them
(``docs/api-bounds.md``). A value out of bounds is INVALID_ARGUMENT with a
``BadRequest`` violation naming the field and the bound; page sizes are the
exception: a larger one is served as the largest (AIP-158), not refused.

The services check the same bounds again where they compute with them; this
check only makes sure no backend (and no job, later) ever sees such a value.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.common.errors import FieldViolation, InvalidArgument
from services.common.interceptors import GateInterceptor, abort_with
from services.common.rules import GROUP_LEVELS, BoundsRules, load_rules
from services.common.validation import MAX_INT64, MAX_PAGE_SIZE, MAX_TEXT_CHARS

BASIS_POINTS = 10_000  # a rate is at most 100%


@dataclass(frozen=True)
class Limit:
    """A field's accepted range: ``low``..``high``; ``high`` names a ``[bounds]`` value or is a fixed number."""

    high: str | int
    low: int = 0
    clamped: bool = False  # served as ``high`` when above it, not refused (page sizes)

    def ceiling(self, bounds: BoundsRules) -> int:
        return self.high if isinstance(self.high, int) else int(getattr(bounds, self.high))

    def named(self) -> str:
        """How a refusal and the reference name the bound."""
        return f"bounds.{self.high}" if isinstance(self.high, str) else "fixed"


PAGE = Limit(MAX_PAGE_SIZE, clamped=True)
MONEY = Limit("money_fen")
PRIZE = Limit("prize_fen")
RATE = Limit(BASIS_POINTS)

# Every integer field of a public request, by its full name.
VALUE_LIMITS: dict[str, Limit] = {
    # GroupService, FactService
    "qun.common.v1.SpendThreshold.min_spend_fen": MONEY,
    "qun.gateway.v1.ListGroupSetsRequest.page_size": PAGE,
    "qun.gateway.v1.ListMyGroupsRequest.page_size": PAGE,
    "qun.gateway.v1.ListMyRemovalsRequest.page_size": PAGE,
    "qun.gateway.v1.SetGroupLevelRequest.level": Limit(GROUP_LEVELS - 1),
    "qun.common.v1.PaidOrderFact.amount_fen": MONEY,
    "qun.common.v1.ContentLevelFact.level": Limit("content_level"),
    "qun.common.v1.TaoqiScoreFact.score": Limit("taoqi_score"),
    "qun.common.v1.RevisitRateFact.rate_bp": RATE,
    # GroupOperationsService, DiscoveryService
    "qun.gateway.v1.ReportMonthlyMetricsRequest.open_rate_bp": RATE,
    "qun.gateway.v1.ReportMonthlyMetricsRequest.revisit_7d_bp": RATE,
    "qun.gateway.v1.ReportMonthlyMetricsRequest.conversion_bp": RATE,
    "qun.gateway.v1.ReportMonthlyMetricsRequest.merchant_messages": Limit("monthly_messages"),
    "qun.gateway.v1.SetSleepingPlanRequest.inactivity_days": Limit("inactivity_days"),
    "qun.gateway.v1.ListAuditEntriesRequest.page_size": PAGE,
    "qun.gateway.v1.CheckMessageRequest.video_seconds": Limit("video_seconds"),
    # CampaignService
    "qun.gateway.v1.ReportItemRequest.sku_count": Limit("skus_per_item"),
    "qun.gateway.v1.ReportItemRequest.price_min_fen": MONEY,
    "qun.gateway.v1.ReportItemRequest.price_max_fen": MONEY,
    "qun.gateway.v1.ReportItemRequest.initial_stock": Limit("stock"),
    "qun.gateway.v1.RestockRequest.quantity": Limit("quantity"),
    "qun.gateway.v1.ListSalesRequest.page_size": PAGE,
    "qun.gateway.v1.FlashSaleSpec.flash_price_fen": MONEY,
    "qun.gateway.v1.PoolSpec.value_fen": PRIZE,
    "qun.gateway.v1.PoolSpec.count": Limit("pool_prizes"),
    "qun.gateway.v1.PoolSpec.per_user_limit": Limit("pool_prizes"),
    "qun.gateway.v1.GroupBuySpec.group_price_fen": MONEY,
    "qun.gateway.v1.GroupBuySpec.group_size": Limit("group_buy_size"),
    "qun.gateway.v1.LuckyRedPacketSpec.value_fen": PRIZE,
    "qun.gateway.v1.LuckyRedPacketSpec.count": Limit("pool_prizes"),
    "qun.gateway.v1.ListActivitiesRequest.page_size": PAGE,
    "qun.gateway.v1.ListRefundsRequest.page_size": PAGE,
    "qun.gateway.v1.Order.quantity": Limit("quantity"),
    "qun.gateway.v1.Order.store_red_packet_fen": PRIZE,  # each entry
    "qun.gateway.v1.ListMyWalletRequest.page_size": PAGE,
    "qun.gateway.v1.VoteRequest.option_index": Limit("vote_options"),
    "qun.gateway.v1.ListEndCardsRequest.page_size": PAGE,
    "qun.gateway.v1.WatchEndCardsRequest.after_seq": Limit(MAX_INT64),  # a position in the store's card stream
    # PushService
    "qun.gateway.v1.ListPushesRequest.page_size": PAGE,
    "qun.gateway.v1.ListPushNoticesRequest.page_size": PAGE,
    "qun.gateway.v1.ListPendingReviewsRequest.page_size": PAGE,
    "qun.gateway.v1.GrantMassSendRequest.audience_size": Limit("audience"),
    "qun.gateway.v1.StreamDeliveriesRequest.chunk_size": Limit("delivery_chunk"),
}

# Every repeated field of a public request: how many entries it may hold.
COUNT_LIMITS: dict[str, Limit] = {
    "qun.gateway.v1.ReportFactsRequest.facts": Limit("facts_per_batch"),
    "qun.gateway.v1.FountainSpec.pools": Limit("pools_per_activity"),
    "qun.gateway.v1.VotingSpec.options": Limit("vote_options"),
    "qun.gateway.v1.Order.cash_red_packet_ids": Limit("order_entries"),
    "qun.gateway.v1.Order.store_coupon_ids": Limit("order_entries"),
    "qun.gateway.v1.Order.store_red_packet_fen": Limit("order_entries"),
}

INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _ours(field: FieldDescriptor) -> bool:
    """A message field whose type is the API's own (timestamps are checked by the services)."""
    return field.message_type is not None and not field.message_type.full_name.startswith("google.")


def bounded_fields(descriptor: Descriptor, seen: set[str] | None = None) -> Iterator[FieldDescriptor]:
    """Every integer and repeated field reachable from a request message, each once."""
    seen = set() if seen is None else seen
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    for field in descriptor.fields:
        if field.type in INTEGER_TYPES or field.is_repeated:
            yield field
        if _ours(field) and field.message_type is not None:
            yield from bounded_fields(field.message_type, seen)


class BoundsCheck:
    """Walks a request's set fields and collects every value past its bound."""

    def __init__(self, bounds: BoundsRules) -> None:
        self.bounds = bounds

    def violations(self, message: Message) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        self._walk(message, "", found)
        return found

    def _walk(self, message: Message, prefix: str, found: list[FieldViolation]) -> None:
        for field, value in message.ListFields():
            path = prefix + field.name
            full = field.full_name
            if field.is_repeated:
                count = COUNT_LIMITS.get(full)
                if count is not None and len(value) > count.ceiling(self.bounds):
                    high = count.ceiling(self.bounds)
                    found.append(
                        FieldViolation(path, f"at most {high:,} entries ({count.named()}), got {len(value):,}")
                    )
                    continue
                for index, item in enumerate(value):
                    self._one(field, item, f"{path}[{index}]", found)
            else:
                self._one(field, value, path, found)

    def _one(self, field: FieldDescriptor, value: Any, path: str, found: list[FieldViolation]) -> None:
        if field.type in INTEGER_TYPES:
            limit = VALUE_LIMITS.get(field.full_name)
            if limit is None or limit.clamped and value >= limit.low:
                return
            high = limit.ceiling(self.bounds)
            if not limit.low <= value <= high:
                found.append(
                    FieldViolation(path, f"must be between {limit.low:,} and {high:,} ({limit.named()}), got {value:,}")
                )
        elif field.type == FieldDescriptor.TYPE_STRING:
            if len(value) > MAX_TEXT_CHARS:
                found.append(FieldViolation(path, f"at most {MAX_TEXT_CHARS:,} characters, got {len(value):,}"))
        elif _ours(field):
            self._walk(value, path + ".", found)


class BoundsInterceptor(GateInterceptor):
    """After authentication: INVALID_ARGUMENT, naming each field and its bound, before any backend is called."""

    def __init__(self, bounds: BoundsRules) -> None:
        super().__init__()
        self.check = BoundsCheck(bounds)

    async def admit(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        if isinstance(request, Message):
            violations = self.check.violations(request)
            if violations:
                await abort_with(context, InvalidArgument(violations))


def reference(bounds: BoundsRules) -> str:
    """The API reference's table: every bounded field with its range and where the bound is set."""
    lines = [
        "# Bounds of the public API (SPEC D2)",
        "",
        "Generated by `python -m gateway.bounds` from `gateway/bounds.py` and the",
        "`[bounds]` of `config/rules.toml` (the defaults; ops may lower them, and",
        "each process refuses to start on bounds whose totals would not fit 64 bits).",
        "A value outside its range is `INVALID_ARGUMENT` with a `BadRequest`",
        "violation naming the field and the bound, before any backend is called;",
        "a larger `page_size` is served as the largest. Every string is at most",
        f"{MAX_TEXT_CHARS:,} characters at the gateway; each service holds names,",
        "ids and texts to their own, shorter limits (64 characters for names and ids).",
        "",
        "| field | range | bound |",
        "|---|---|---|",
    ]
    for name, limit in sorted(VALUE_LIMITS.items()):
        high = limit.ceiling(bounds)
        shown = f"served as at most {high:,}" if limit.clamped else f"{limit.low:,} … {high:,}"
        lines.append(f"| `{name}` | {shown} | {limit.named()} |")
    for name, limit in sorted(COUNT_LIMITS.items()):
        lines.append(f"| `{name}` (entries) | at most {limit.ceiling(bounds):,} | {limit.named()} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference(load_rules().bounds))
