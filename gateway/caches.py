"""What the gateway keeps: bounded maps, and short-lived copies of group-sets so a join needs two backend calls.

A join reads the set's threshold to ask eligibility; keeping that read for a
few seconds is safe because the join's last step (AddMember) carries the
threshold version it checked, and the groups service refuses a stale one with
ABORTED — the gateway then drops its copy and checks again (SPEC C11). What
may lag by up to the time-to-live is only the admin list behind the C2
exemption.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from qun.groups.v1 import groups_pb2

TTL_SECONDS = 5.0
MAX_ENTRIES = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """At most ``max_entries`` values, the least recently used dropped first: a gateway replica's
    memory stays bounded however many sets and activities it sees."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


class GroupSetViews:
    def __init__(self, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self._kept: Kept[str, tuple[float, groups_pb2.GroupSet]] = Kept(max_entries)

    def get(self, group_set_id: str) -> groups_pb2.GroupSet | None:
        entry = self._kept.get(group_set_id)
        if entry is None:
            return None
        stored_at, view = entry
        if time.monotonic() - stored_at > self.ttl:
            self._kept.drop(group_set_id)
            return None
        return view

    def put(self, view: groups_pb2.GroupSet) -> None:
        self._kept.put(view.group_set_id, (time.monotonic(), view))

    def drop(self, group_set_id: str) -> None:
        self._kept.drop(group_set_id)
