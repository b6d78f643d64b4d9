"""The campaign kinds' one declaration agrees with both contracts, the rules and the gateway."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qun.campaigns.v1 import campaigns_pb2 as internal
from qun.gateway.v1 import campaigns_pb2 as public
from services.campaigns import convert, kinds, rules
from services.campaigns.kinds import DECLARATIONS, ActivityKind, declaration, of_spec
from services.common.rules import Rules
from services.common.timestamps import to_timestamp
from services.common.validation import Fields

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_every_kind_is_declared_once_with_its_spec_and_proto_value_in_both_contracts() -> None:
    assert [d.kind for d in DECLARATIONS] == list(ActivityKind)
    for contract in (internal, public):
        specs = {f.name for f in contract.CreateActivityRequest.DESCRIPTOR.oneofs_by_name["spec"].fields}
        assert specs == {d.spec for d in DECLARATIONS}
        named = {n for n in contract.ActivityKind.keys() if not n.endswith("_UNSPECIFIED")}
        assert named == {d.proto_name for d in DECLARATIONS}
    for d in DECLARATIONS:
        assert internal.ActivityKind.Value(d.proto_name) == public.ActivityKind.Value(d.proto_name)
        assert of_spec(d.spec) is d and declaration(d.kind.value) is d
    assert of_spec(None) is None and of_spec("unknown") is None


def test_the_rules_and_the_conversions_read_the_declaration() -> None:
    assert rules.KIND_RULE == {d.kind: d.rule_id for d in DECLARATIONS}
    assert rules.PRIZE_ACTIVITIES == {ActivityKind.RED_PACKET_FOUNTAIN, ActivityKind.LUCKY_RED_PACKET}
    assert set(rules.RETIRED_TOOLS) == {ActivityKind.STORE_RED_PACKET, ActivityKind.TASK_REWARD}
    assert set(convert.KIND_TO_PROTO) == set(ActivityKind)
    assert [d.kind for d in DECLARATIONS if d.live_groups_only] == [ActivityKind.LUCKY_RED_PACKET]


def test_a_kinds_validator_names_the_fields_of_its_spec(rules: Rules) -> None:
    f = Fields()
    spec = internal.FlashSaleSpec(item_id="", flash_price_fen=0)
    kinds.flash_sale_spec(f, spec, rules.bounds, NOW)
    assert [v.field for v in f.violations] == ["flash_sale.item_id", "flash_sale.flash_price_fen"]
    f = Fields()
    lucky = internal.LuckyRedPacketSpec(value_fen=100, count=5, expires_at=to_timestamp(NOW + timedelta(days=1)))
    made = kinds.lucky_red_packet_spec(f, lucky, rules.bounds, NOW)
    assert not f.violations and [(p.kind, p.count, p.per_user_limit) for p in made.pools] == [
        (kinds.PrizeKind.CASH_RED_PACKET, 5, 1)
    ]
