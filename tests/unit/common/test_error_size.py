"""A refusal that echoes hostile input still fits in a peer's trailers (8 KiB by default).

Regression: a 5000-character ``period`` came back from the groups service in
the message and the field violation; the gateway's channel refused the
oversized trailers, the details no longer matched the code, and the caller got
INTERNAL.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

import grpc

from services.common.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    ServiceError,
    clip,
    status_from_error,
)


def trailer_bytes(error: ServiceError) -> int:
    status = error.to_status()
    return len(quote(status.message, safe=" ")) + len(base64.b64encode(status.SerializeToString()))


def test_clip_counts_utf8_bytes_and_marks_the_cut() -> None:
    assert clip("short", 10) == "short"
    cut = clip("群" * 100, 30)
    assert cut.endswith("…") and len(cut.encode()) <= 30 + 3


# Under the 8 KiB limit with room for the other headers.
BUDGET = 7000


def test_huge_and_many_violations_stay_small() -> None:
    huge = InvalidArgument([FieldViolation(f"facts[{i}].x", f"got {'群' * 5000!r}") for i in range(3000)])
    assert trailer_bytes(huge) < BUDGET
    assert huge.violations[2999].field == "facts[2999].x"  # the servicer still sees them all
    listed = huge.details()[0].field_violations  # type: ignore[attr-defined]
    assert listed[-1].description.startswith("and ") and listed[-1].description.endswith(" more violations")


def test_a_dozen_ordinary_violations_are_all_listed() -> None:
    error = InvalidArgument(
        [FieldViolation(f"facts[{i}].paid_order.amount_fen", "must be positive, got 0") for i in range(20)]
    )
    assert len(error.details()[0].field_violations) == 20  # type: ignore[attr-defined]


def test_not_found_with_a_huge_name_stays_small() -> None:
    assert trailer_bytes(NotFound("group set", "x" * 100_000)) < 2000
    assert trailer_bytes(ServiceError("群" * 100_000, metadata={"name": "群" * 100_000})) < BUDGET


class MismatchedCall(grpc.RpcError):
    """A call whose trailers carry a status with another code than the call's."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return "received metadata size exceeds soft limit"

    def trailing_metadata(self):  # type: ignore[no-untyped-def]
        status = InvalidArgument.one("period", "bad").to_status()
        return (("grpc-status-details-bin", status.SerializeToString()),)


def test_a_status_that_does_not_match_the_code_reads_as_none() -> None:
    assert status_from_error(MismatchedCall()) is None
