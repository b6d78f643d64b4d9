"""The gateway's short-lived copies of group-sets, so a join needs two backend calls, not three.

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

from qun.groups.v1 import groups_pb2

TTL_SECONDS = 5.0
MAX_ENTRIES = 10_000


class GroupSetViews:
    def __init__(self, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, groups_pb2.GroupSet]] = OrderedDict()

    def get(self, group_set_id: str) -> groups_pb2.GroupSet | None:
        entry = self._entries.get(group_set_id)
        if entry is None:
            return None
        stored_at, view = entry
        if time.monotonic() - stored_at > self.ttl:
            del self._entries[group_set_id]
            return None
        return view

    def put(self, view: groups_pb2.GroupSet) -> None:
        self._entries[view.group_set_id] = (time.monotonic(), view)
        self._entries.move_to_end(view.group_set_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, group_set_id: str) -> None:
        self._entries.pop(group_set_id, None)
