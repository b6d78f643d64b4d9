"""The request_id rule's pieces: the fingerprint of a request, and the one refusal of a reused id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum

import grpc
import pytest

from services.common.request_ids import RequestIdReused, check_same_request, request_fingerprint


class Kind(StrEnum):
    A = "a"


@dataclass(frozen=True)
class Asked:
    kind: Kind
    when: datetime
    ids: tuple[str, ...]


def test_the_same_request_has_the_same_fingerprint() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    same_instant = at.astimezone(timezone(timedelta(hours=8)))
    first = request_fingerprint(order=Asked(Kind.A, at, ("x", "y")), quantity=2)
    assert first == request_fingerprint(quantity=2, order=Asked(Kind.A, same_instant, ("x", "y")))
    assert first != request_fingerprint(order=Asked(Kind.A, at, ("y", "x")), quantity=2)
    assert first != request_fingerprint(order=Asked(Kind.A, at, ("x", "y")), quantity=3)
    assert len(first) == 64


def test_a_reused_id_is_already_exists_with_its_reason() -> None:
    check_same_request("r1", "f1", "f1", "purchase")
    check_same_request("r1", None, "f1", "purchase")  # a row from before fingerprints
    with pytest.raises(RequestIdReused) as refused:
        check_same_request("r1", "f1", "f2", "purchase")
    status = refused.value
    assert status.code is grpc.StatusCode.ALREADY_EXISTS and status.reason == "REQUEST_ID_REUSED"
    assert status.metadata == {"request_id": "r1"} and "another purchase" in status.message
