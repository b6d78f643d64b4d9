"""The gateway's kept copies of group-sets expire and stay bounded."""

from __future__ import annotations

import time

from gateway.caches import GroupSetViews
from qun.groups.v1 import groups_pb2


def test_a_copy_expires_after_its_time_to_live(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    views = GroupSetViews(ttl=5.0)
    views.put(groups_pb2.GroupSet(group_set_id="gs_a", threshold_version=3))
    assert views.get("gs_a").threshold_version == 3  # type: ignore[union-attr]
    now[0] += 5.1
    assert views.get("gs_a") is None


def test_the_oldest_copies_are_dropped_past_the_bound() -> None:
    views = GroupSetViews(max_entries=2)
    for name in ("gs_a", "gs_b", "gs_c"):
        views.put(groups_pb2.GroupSet(group_set_id=name))
    assert views.get("gs_a") is None and views.get("gs_c") is not None
    views.drop("gs_c")
    assert views.get("gs_c") is None
