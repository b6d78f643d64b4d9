"""The official modules and the message policy as plain functions (V2–V6, C3, R4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.discovery import (
    Candidate,
    MessageKind,
    ThresholdKind,
    item_page,
    message_failures,
    post_component_failures,
    recommend,
    store_page,
)
from services.common.calendar import MarketCalendar
from services.common.errors import Failure
from services.common.rules import Rules

NOW = datetime(2026, 5, 20, 12, tzinfo=UTC)
CST = MarketCalendar(8)
NOT_FOLLOWING = Failure("C9", "NOT_FOLLOWING", "does not follow")


def candidate(
    gid: str,
    kind: ThresholdKind = ThresholdKind.FOLLOW,
    *,
    members: int = 10,
    full: bool = False,
    failures=(),  # type: ignore[no-untyped-def]
) -> Candidate:
    return Candidate(gid, gid, kind, members, full, tuple(failures))


def test_V2_store_page_shows_only_groups_whose_threshold_is_met() -> None:
    module = store_page(
        [candidate("a"), candidate("b", failures=[NOT_FOLLOWING])],
        consumer_in_store_group=False,
        first_group_created_at=NOW - timedelta(days=3),
        now=NOW,
        market=CST,
    )
    assert [c.group_set_id for c in module.shown] == ["a"]
    hidden = next(e for e in module.entries if not e.shown)
    assert [r.rule_id for r in hidden.reasons] == ["C9"]


def test_V2_first_group_created_today_shows_from_tomorrow() -> None:
    today = store_page([candidate("a")], consumer_in_store_group=False, first_group_created_at=NOW, now=NOW, market=CST)
    assert today.shown == [] and [r.rule_id for r in today.module_reasons] == ["V2"]
    tomorrow = store_page(
        [candidate("a")],
        consumer_in_store_group=False,
        first_group_created_at=NOW,
        now=NOW + timedelta(days=1),
        market=CST,
    )
    assert [c.group_set_id for c in tomorrow.shown] == ["a"]


def test_V2_today_and_tomorrow_are_the_marketplace_days() -> None:
    """D1: a first group made at 23:30 in China shows from 00:00 there, 30 minutes later."""
    created = datetime(2026, 5, 20, 15, 30, tzinfo=UTC)  # 23:30 on May 20 in China; still May 20 in UTC
    page = store_page(
        [candidate("a")],
        consumer_in_store_group=False,
        first_group_created_at=created,
        now=created + timedelta(minutes=29),
        market=CST,
    )
    assert [r.rule_id for r in page.module_reasons] == ["V2"]
    assert page.module_reasons[0].figures["shows_from"] == "2026-05-20T16:00:00+00:00"
    assert "2026-05-21 00:00 UTC+8" in page.module_reasons[0].message
    at_midnight = store_page(
        [candidate("a")],
        consumer_in_store_group=False,
        first_group_created_at=created,
        now=created + timedelta(minutes=30),
        market=CST,
    )
    assert [c.group_set_id for c in at_midnight.shown] == ["a"]
    # 00:30 on May 21 in China is still May 20 in UTC; at 09:00 there (May 21 in UTC too) it is the same day.
    late = datetime(2026, 5, 20, 16, 30, tzinfo=UTC)
    later_same_day = datetime(2026, 5, 21, 1, 0, tzinfo=UTC)
    page = store_page(
        [candidate("a")], consumer_in_store_group=False, first_group_created_at=late, now=later_same_day, market=CST
    )
    assert page.shown == []


def test_V3_never_on_a_group_buy_item() -> None:
    assert item_page([candidate("a")], in_group_buy=True, consumer_in_store_group=False).shown == []
    assert len(item_page([candidate("a")], in_group_buy=False, consumer_in_store_group=False).shown) == 1


def test_V4_spend_threshold_wins_over_follow() -> None:
    best, _ = recommend(
        [candidate("follow", members=400), candidate("spend", ThresholdKind.SPEND, members=5)],
        consumer_in_store_group=False,
    )
    assert best is not None and best.group_set_id == "spend"


def test_V5_none_for_a_consumer_already_in_a_store_group() -> None:
    best, module = recommend([candidate("a")], consumer_in_store_group=True)
    assert best is None and [r.rule_id for r in module.module_reasons] == ["V5"]


def test_V5a_never_password_full_or_unjoinable_and_more_active_first() -> None:
    best, module = recommend(
        [
            candidate("password", ThresholdKind.PASSWORD, members=900),
            candidate("full", members=800, full=True),
            candidate("refused", members=700, failures=[Failure("C2", "TAOQI_SCORE_TOO_LOW", "low")]),
            candidate("quiet", members=10),
            candidate("busy", members=300),
        ],
        consumer_in_store_group=False,
    )
    assert best is not None and best.group_set_id == "busy"
    passed = {e.candidate.group_set_id: [r.reason for r in e.reasons] for e in module.entries if not e.shown}
    assert passed["password"] == ["PASSWORD_GROUP"]
    assert passed["full"] == ["GROUP_SET_FULL"]
    assert passed["refused"] == ["TAOQI_SCORE_TOO_LOW"]
    assert passed["quiet"] == ["OUTRANKED"]


def test_V6_post_component_needs_main_account_and_public_group() -> None:
    assert post_component_failures(caller_is_main_account=True, is_public=True) == []
    reasons = [f.reason for f in post_component_failures(caller_is_main_account=False, is_public=False)]
    assert reasons == ["NOT_MAIN_ACCOUNT", "GROUP_NOT_PUBLIC"]


def test_R4_only_staff_share_items_from_their_history(rules: Rules) -> None:
    def reasons(**kwargs: object) -> list[str]:
        base = dict(
            kind=MessageKind.ITEM_SHARE,
            sender_is_member=True,
            sender_is_staff=True,
            item_known_to_sender=True,
            video_seconds=0,
        )
        return [f.reason for f in message_failures(rules, **{**base, **kwargs})]  # type: ignore[arg-type]

    assert reasons() == []
    assert reasons(sender_is_staff=False) == ["FANS_CANNOT_SHARE_ITEMS"]
    assert reasons(item_known_to_sender=False) == ["ITEM_NOT_FROM_SENDER_HISTORY"]
    assert reasons(kind=MessageKind.VIDEO, video_seconds=15) == []
    assert reasons(kind=MessageKind.VIDEO, video_seconds=16) == ["VIDEO_TOO_LONG"]
    assert reasons(kind=MessageKind.TEXT, sender_is_staff=False) == []
