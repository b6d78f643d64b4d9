"""The push kinds' one declaration agrees with both contracts and the eligibility service's audiences."""

from __future__ import annotations

from gateway import push as gateway_push
from qun.eligibility.v1 import eligibility_pb2
from qun.gateway.v1 import push_pb2 as public
from qun.push.v1 import push_pb2 as internal
from services.push import convert, rules
from services.push.kinds import DECLARATIONS, PushKind, Quota, declaration, grant_misuse


def declared_values(enum: object) -> set[str]:
    return {name for name in enum.keys() if not name.endswith("_UNSPECIFIED")}  # type: ignore[attr-defined]


def test_every_kind_is_declared_once_and_named_alike_in_both_contracts() -> None:
    assert [d.kind for d in DECLARATIONS] == list(PushKind)
    names = {d.proto_name for d in DECLARATIONS}
    assert names == declared_values(internal.PushKind) == declared_values(public.PushKind)
    for d in DECLARATIONS:  # the gateway copies a kind by number: both contracts give it the same one
        assert internal.PushKind.Value(d.proto_name) == public.PushKind.Value(d.proto_name)


def test_the_gateway_reads_the_declaration() -> None:
    for d in DECLARATIONS:
        number = public.PushKind.Value(d.proto_name)
        assert gateway_push.RULE_OF_KIND[number] == d.rule_id
        audience = eligibility_pb2.PushAudience.Name(gateway_push.AUDIENCE_OF_KIND[number])
        assert audience == f"PUSH_AUDIENCE_{d.audience.name}"
    assert set(gateway_push.RULE_OF_KIND) == {public.PushKind.Value(d.proto_name) for d in DECLARATIONS}


def test_the_rules_and_the_conversions_read_the_declaration() -> None:
    assert rules.RULE_OF_KIND == {d.kind: d.rule_id for d in DECLARATIONS}
    assert rules.RECALL_KINDS == (PushKind.RECALL_TIER_1, PushKind.RECALL_TIER_2)
    assert [PushKind.RECALL_TIER_1.tier, PushKind.RECALL_TIER_2.tier, PushKind.SUBSCRIPTION.tier] == [1, 2, 0]
    assert {convert.KIND_PROTOS[k] for k in PushKind} == {internal.PushKind.Value(d.proto_name) for d in DECLARATIONS}


def test_only_a_kind_that_takes_a_grant_names_one() -> None:
    assert [d.kind for d in DECLARATIONS if d.takes_grant] == [PushKind.MASS_SEND]
    assert declaration(PushKind.MASS_SEND).quota is Quota.GRANT
    assert grant_misuse(PushKind.MASS_SEND, "gr_1") is None and grant_misuse(PushKind.SUBSCRIPTION, "") is None
    assert grant_misuse(PushKind.SUBSCRIPTION, "gr_1") == "only a mass-send push uses a grant (P5)"
