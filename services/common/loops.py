"""Background loops a process runs while it serves, owned by the runtime (``services.common.server``).

An app declares its loops (``ServiceApp.loops``); the runtime starts them
once the process reports SERVING and, on SIGTERM, asks them to stop while
in-flight calls drain: each loop finishes the pass it is in (a transaction
commits or rolls back whole, never cut off mid-statement) and returns. A
loop still running when the grace period ends is cancelled, so a process
always stops. A pass that raises is logged and the loop goes on; it is the
pass's business to isolate stores (``services.common.jobs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("qun.loops")


@dataclass(frozen=True)
class Loop:
    """A named background loop: ``run(stopping)`` returns soon after ``stopping`` is set."""

    name: str
    run: Callable[[asyncio.Event], Awaitable[None]]


def every(name: str, seconds: float, one_pass: Callable[[], Awaitable[object]], *, at_once: bool = False) -> Loop:
    """A loop that runs ``one_pass`` every ``seconds`` (first at once with ``at_once``, else after a wait)."""

    async def run(stopping: asyncio.Event) -> None:
        if not at_once and await stopped_within(stopping, seconds):
            return
        while not stopping.is_set():
            try:
                await one_pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next pass tries again; a store's own failure never gets here (jobs)
                log.exception("background pass failed; the next one tries again", extra={"fields": {"loop": name}})
            if await stopped_within(stopping, seconds):
                return

    return Loop(name, run)


async def stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    """Waits up to ``seconds``; True when the loop was asked to stop meanwhile."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        return False
    return True


class Loops:
    """The loops of one process: started together, stopped together."""

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def running(self) -> list[str]:
        return [name for name, task in self._tasks.items() if not task.done()]

    def start(self, loops: Sequence[Loop]) -> None:
        self._stopping.clear()
        for loop in loops:
            if loop.name in self._tasks:
                raise ValueError(f"two loops named {loop.name!r}")
            self._tasks[loop.name] = asyncio.create_task(self._guarded(loop), name=loop.name)
        if loops:
            log.info("loops started", extra={"fields": {"loops": [loop.name for loop in loops]}})

    async def _guarded(self, loop: Loop) -> None:
        try:
            await loop.run(self._stopping)
        except asyncio.CancelledError:
            raise
        except Exception:  # a loop that died would stop its job silently: say so
            log.exception("background loop ended by an error", extra={"fields": {"loop": loop.name}})

    async def stop(self, grace_seconds: float) -> None:
        """Asks every loop to stop, lets each finish its pass for up to ``grace_seconds``, then cancels the rest."""
        self._stopping.set()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        if not tasks:
            return
        _done, late = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if late:
            log.warning(
                "loops cancelled after the grace period", extra={"fields": {"loops": [t.get_name() for t in late]}}
            )
