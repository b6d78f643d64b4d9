"""Black-box scenarios over the gateway: what a client of any deployment sees."""

from __future__ import annotations

import grpc

from tests.e2e import scenarios
from tests.e2e.scenarios import EVERY_JOIN_RULE, Gateway


def test_store_group_set_created_and_joined_T5_R3_C13(gw: Gateway) -> None:
    run = scenarios.store_group_and_join(gw)
    assert run.group.group_set_id.startswith("gs_")
    assert run.group.owner_account_id == run.store.main_id  # R1
    assert [s.name for s in run.group.sub_groups] == ["粉丝群1"]  # T5
    assert run.joined.membership.sub_group_name == "粉丝群1"
    assert run.joined.newcomer_reply == "欢迎!"  # R3
    assert run.again.already_member and run.again.membership == run.joined.membership  # idempotent (C13)
    assert run.mine == [run.group.group_set_id]
    assert run.member_count == 1
    assert run.group.group_set_id in run.listed


def test_refused_join_names_every_failed_rule_C14(gw: Gateway) -> None:
    run = scenarios.refused_join_with_every_rule(gw)
    assert run.explained == EVERY_JOIN_RULE  # X1: the dry run says the same
    assert run.join.code is grpc.StatusCode.FAILED_PRECONDITION
    assert sorted(run.join.rules) == EVERY_JOIN_RULE  # one PreconditionFailure violation per rule
    assert sorted(run.join.info_rules.split(",")) == EVERY_JOIN_RULE  # and the ErrorInfo lists them
    assert run.join.reason
    assert run.member_count == 0


def test_refused_create_names_every_failed_condition_E6(gw: Gateway) -> None:
    refusal = scenarios.refused_create(gw)
    assert refusal.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.rules == ["E2", "E2", "E2"]


def test_live_fan_group_E4_C10_T4(gw: Gateway) -> None:
    run = scenarios.live_fan_group(gw)
    assert run.group.sub_groups[0].name == "主播铁粉群1" and run.group.sub_groups[0].capacity == 100
    assert run.iron.code is grpc.StatusCode.FAILED_PRECONDITION and run.iron.rules == ["C10"]
    assert run.diamond.membership.sub_group_name == "主播铁粉群1"


def test_admin_management_R2(gw: Gateway) -> None:
    run = scenarios.admin_management(gw)
    assert len(run.added) == 1
    assert run.announcement == "今晚8点秒杀"
    assert run.admin_dissolve.code is grpc.StatusCode.PERMISSION_DENIED
    assert run.removed == []
    assert run.removed_admin_update.code is grpc.StatusCode.PERMISSION_DENIED
    assert run.after_dissolve.code is grpc.StatusCode.NOT_FOUND


def test_calls_need_a_valid_token_and_the_right_role(gw: Gateway) -> None:
    assert scenarios.unauthenticated(gw) == (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def test_flash_sale_purchase_claim_and_expiry_M2_M5_M7(gw: Gateway) -> None:
    run = scenarios.flash_sale_and_prizes(gw)
    assert run.bought.purchase.quantity == 1 and run.stock_left == 9  # M2: the item's one stock
    assert run.outsider.code is grpc.StatusCode.FAILED_PRECONDITION and "M5" in run.outsider.rules
    assert run.claimed.value_fen == 88
    assert run.expiry.red_packets_refunded >= 0  # ops may run the expiry job at any time


def test_push_review_queue_P5_P6_P8(gw: Gateway) -> None:
    run = scenarios.push_review_queue(gw)
    assert run.queue == [run.pending.push_id]  # P8: the approved one left the queue
    assert run.approved.push_id != run.pending.push_id
    assert run.refused_subscription.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "P1" in run.refused_subscription.rules
