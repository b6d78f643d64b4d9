"""The gateway's copy between the public and internal campaigns contracts (``gateway.convert``).

Regression: a request timestamp outside 0001..9999 made the copy into the backend's message raise
(INTERNAL); it is the caller's error, INVALID_ARGUMENT. The copy went through JSON once; it must
still give what that gave, for every message both contracts have, hostile values included.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings

from gateway.convert import convert
from qun.campaigns.v1 import campaigns_pb2 as internal
from qun.gateway.v1 import campaigns_pb2 as public
from services.common.errors import InvalidArgument
from tests.fuzz import strategies

# Every message both contracts name, in both directions (requests go in, replies come out).
PAIRS = [
    (source, target)
    for name in sorted(set(public.DESCRIPTOR.message_types_by_name) & set(internal.DESCRIPTOR.message_types_by_name))
    for source, target in (
        (getattr(public, name), getattr(internal, name)),
        (getattr(internal, name), getattr(public, name)),
    )
]


@pytest.mark.parametrize(
    "stamp", [Timestamp(seconds=2**62), Timestamp(seconds=-(2**62)), Timestamp(seconds=1, nanos=-5)]
)
def test_a_timestamp_outside_the_calendar_is_invalid_argument(stamp: Timestamp) -> None:
    request = public.CreateActivityRequest(group_set_id="gs_1", title="t", starts_at=stamp)
    with pytest.raises(InvalidArgument, match="cannot be read"):
        convert(request, internal.CreateActivityRequest, store_id="s1")


def test_a_valid_request_is_copied() -> None:
    request = public.CreateActivityRequest(group_set_id="gs_1", title="t", starts_at=Timestamp(seconds=1_800_000_000))
    out = convert(request, internal.CreateActivityRequest, store_id="s1")
    assert (out.group_set_id, out.store_id, out.starts_at.seconds) == ("gs_1", "s1", 1_800_000_000)


def test_fields_the_target_lacks_and_fields_unknown_to_the_schema_are_dropped() -> None:
    reply = internal.PurchaseResponse(stock_left=3, replayed=True, purchase=internal.PurchaseRecord(purchase_id="p1"))
    out = convert(reply, public.PurchaseResponse)
    assert out == public.PurchaseResponse(stock_left=3, purchase=public.PurchaseRecord(purchase_id="p1"))
    unknown_field_99 = b"\x98\x06\x01"  # varint field 99 = 1, which no version of the schema has
    request = public.PurchaseRequest.FromString(
        public.PurchaseRequest(store_id="s1").SerializeToString() + unknown_field_99
    )
    assert convert(request, internal.PurchaseRequest).SerializeToString() == b"\x12\x02s1"


def test_enums_go_by_name_and_unnamed_numbers_pass() -> None:
    claim = public.Claim(kind=public.PRIZE_KIND_STORE_COUPON, state=77)
    out = convert(claim, internal.Claim)
    assert (out.kind, out.state) == (internal.PRIZE_KIND_STORE_COUPON, 77)


def _through_json(source: Message, target: type[Message]) -> Message | None:
    """The copy as it was: the source as JSON, parsed into the target; None where that could not read it."""
    out = target()
    try:
        json_format.ParseDict(
            json_format.MessageToDict(source, preserving_proto_field_name=True), out, ignore_unknown_fields=True
        )
    except (json_format.Error, ValueError):
        return None
    return out


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=lambda t: t.DESCRIPTOR.full_name)
def test_the_copy_gives_what_the_json_copy_gave(source: type[Message], target: type[Message]) -> None:
    @settings(max_examples=5, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(message=strategies.message(source.DESCRIPTOR, ["s1", "act_1"]))
    def check(message: Any) -> None:
        expected = _through_json(message, target)
        if expected is None:
            with pytest.raises(InvalidArgument):
                convert(message, target)
        else:
            assert convert(message, target).SerializeToString(deterministic=True) == expected.SerializeToString(
                deterministic=True
            )

    check()


def test_a_refusals_figures_map_is_copied_entry_by_entry() -> None:
    from qun.gateway.v1 import push_pb2 as public_push
    from qun.push.v1 import push_pb2 as internal_push

    entry = internal_push.QuotaEntry(kind=internal_push.PUSH_KIND_RECALL_TIER_2, remaining=0)
    entry.unmet.add(rule_id="P2", reason="TOO_FEW", figures={"old_customer_fans": "90", "required": "100"})
    copied = convert(entry, public_push.QuotaEntry)
    assert copied.kind == public_push.PUSH_KIND_RECALL_TIER_2
    assert dict(copied.unmet[0].figures) == {"old_customer_fans": "90", "required": "100"}


def test_a_named_field_replaces_what_the_copy_put_there() -> None:
    reply = internal.ListSalesResponse(purchases=[internal.PurchaseRecord(purchase_id="p1")], next_page_token="t")
    copied = convert(reply, public.ListSalesResponse, purchases=[public.PurchaseRecord(purchase_id="p2")])
    assert [p.purchase_id for p in copied.purchases] == ["p2"]
    assert copied.next_page_token == "t"
