"""Regression: a request timestamp outside 0001..9999 made the gateway's copy into the backend's
message raise (INTERNAL); it is the caller's error, INVALID_ARGUMENT."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.campaigns import convert
from qun.campaigns.v1 import campaigns_pb2 as internal
from qun.gateway.v1 import campaigns_pb2 as public
from services.common.errors import InvalidArgument


@pytest.mark.parametrize("stamp", [Timestamp(seconds=2**62), Timestamp(seconds=-(2**62)), Timestamp(seconds=1, nanos=-5)])
def test_a_timestamp_outside_the_calendar_is_invalid_argument(stamp: Timestamp) -> None:
    request = public.CreateActivityRequest(group_set_id="gs_1", title="t", starts_at=stamp)
    with pytest.raises(InvalidArgument, match="cannot be read"):
        convert(request, internal.CreateActivityRequest, store_id="s1")


def test_a_valid_request_is_copied() -> None:
    request = public.CreateActivityRequest(group_set_id="gs_1", title="t", starts_at=Timestamp(seconds=1_800_000_000))
    out = convert(request, internal.CreateActivityRequest, store_id="s1")
    assert (out.group_set_id, out.store_id, out.starts_at.seconds) == ("gs_1", "s1", 1_800_000_000)
