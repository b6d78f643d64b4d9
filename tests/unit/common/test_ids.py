"""Ids the services mint: random ones name rows, ordered ones number a trail read in the order it was written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common import ids
from services.common.ids import EPOCH, MAX_ORDERED_AT, ORDERED_RANDOM_BITS, new_id, ordered_id

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)


def test_new_ids_name_their_kind_and_do_not_repeat() -> None:
    ids = {new_id("gs") for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("gs_") and len(i) == 19 for i in ids)


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test mints as a process that has minted nothing; the real process's last number comes back after."""
    monkeypatch.setattr(ids, "_last_ordered", 0)


def test_ordered_ids_follow_the_order_of_writing_whatever_the_clock_says() -> None:
    same_millisecond = [ordered_id(NOW) for _ in range(100)]
    assert same_millisecond == sorted(same_millisecond) and len(set(same_millisecond)) == 100
    earlier_clock = ordered_id(NOW - timedelta(hours=1))
    assert earlier_clock > same_millisecond[-1]  # a clock set back never puts a row before one written already


def test_an_ordered_id_carries_its_millisecond_above_its_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process (nothing minted yet) numbers a later millisecond above every number of an earlier one.
    first = ordered_id(NOW)
    monkeypatch.setattr(ids, "_last_ordered", 0)
    later = ordered_id(NOW + timedelta(milliseconds=1))
    millis = int((NOW - EPOCH).total_seconds() * 1000)
    assert (first >> ORDERED_RANDOM_BITS, later >> ORDERED_RANDOM_BITS) == (millis, millis + 1)
    assert later > first


def test_ordered_ids_fit_a_signed_64_bit_key_until_the_epoch_runs_out() -> None:
    assert 0 < ordered_id(MAX_ORDERED_AT) <= 2**63 - 1


def test_a_clock_past_the_last_millisecond_still_mints_ids_a_key_holds() -> None:
    # A clock file set to year 9999 (demos of time rules) must not make an audit write fail later.
    far = [ordered_id(datetime(9999, 12, 31, tzinfo=UTC)) for _ in range(3)]
    assert far == sorted(far) and all(0 < i <= 2**63 - 1 for i in far)
