"""The gateway keeps which group-set each activity runs in, bounded, the least recently used first out."""

from __future__ import annotations

from gateway.campaigns import ActivitySets


def test_a_kept_group_set_is_found_by_store_and_activity() -> None:
    sets = ActivitySets()
    sets.put("s1", "act_1", "gs_1")
    assert sets.get("s1", "act_1") == "gs_1"
    assert sets.get("s2", "act_1") is None  # another store's activity of that id is not this one


def test_the_least_recently_used_go_first_past_the_bound() -> None:
    sets = ActivitySets(max_entries=2)
    sets.put("s1", "act_a", "gs_a")
    sets.put("s1", "act_b", "gs_b")
    assert sets.get("s1", "act_a") == "gs_a"  # used: act_b is now the oldest
    sets.put("s1", "act_c", "gs_c")
    assert [sets.get("s1", a) for a in ("act_a", "act_b", "act_c")] == ["gs_a", None, "gs_c"]
