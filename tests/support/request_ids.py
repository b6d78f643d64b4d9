"""The request_id rule as tests check it: a reused id with another request is one status everywhere."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest
from google.protobuf.message import Message

from services.common.errors import error_info, status_from_error
from services.common.request_ids import REASON


async def refused_as_reused(call: Awaitable[Message], request_id: str) -> None:
    """``call`` fails with ALREADY_EXISTS, ErrorInfo reason REQUEST_ID_REUSED naming ``request_id``."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() is grpc.StatusCode.ALREADY_EXISTS, refused.value.details()
    status = status_from_error(refused.value)
    assert status is not None
    info = error_info(status)
    assert info is not None and info.reason == REASON and info.metadata["request_id"] == request_id
