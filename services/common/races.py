"""A unit of work retried once when a concurrent request with the same key won the race.

Repositories look a request id up before they write, so a retry finds the
first request's row and replays it. Two copies of one request arriving at
the same moment both miss that lookup; the unique key on the request id then
refuses the second insert (``IntegrityError``) and its transaction rolls back
whole. Run again, the loser's lookup finds the winner's committed row and
answers with the first answer. A second collision means something else holds
the key: the caller gets ABORTED and may retry with the same request id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError

from services.common.errors import Aborted

T = TypeVar("T")

WRITE_ATTEMPTS = 2  # a lost request_id race is answered by the replay on the second attempt


async def retry_lost_race(transaction: Callable[[], Awaitable[T]], *, what: str = "request") -> T:
    """Runs ``transaction`` (one whole transaction); once more after a lost unique-key race."""
    for attempt in range(WRITE_ATTEMPTS):
        try:
            return await transaction()
        except IntegrityError:
            if attempt + 1 == WRITE_ATTEMPTS:
                raise Aborted(f"a concurrent {what} with the same request_id; retry it") from None
    raise AssertionError("unreachable")  # pragma: no cover
