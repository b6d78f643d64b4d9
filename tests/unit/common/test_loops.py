"""Background loops owned by the runtime: passes on a period, errors survived, a stop that waits, then cancels."""

from __future__ import annotations

import asyncio

import pytest

from services.common.loops import Loop, Loops, every


async def test_a_loop_runs_its_passes_survives_an_error_and_stops_when_asked() -> None:
    passes: list[int] = []

    async def one_pass() -> None:
        passes.append(len(passes))
        if len(passes) == 2:
            raise RuntimeError("the database went away")

    loops = Loops()
    loops.start([every("probe", 0.01, one_pass, at_once=True)])
    while len(passes) < 4:
        await asyncio.sleep(0.01)
    assert loops.running == ["probe"]
    await loops.stop(grace_seconds=1)
    assert loops.running == []
    count = len(passes)
    await asyncio.sleep(0.05)
    assert len(passes) == count  # nothing runs after the stop


async def test_a_pass_in_flight_finishes_within_the_grace_and_a_late_one_is_cancelled() -> None:
    finished: list[str] = []

    async def slow_pass(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)

    def looping(name: str, seconds: float) -> Loop:
        async def run(stopping: asyncio.Event) -> None:
            while not stopping.is_set():
                await slow_pass(name, seconds)

        return Loop(name, run)

    loops = Loops()
    loops.start([looping("quick", 0.05), looping("stuck", 30)])
    await asyncio.sleep(0.01)
    await loops.stop(grace_seconds=0.3)
    assert finished == ["quick"] and loops.running == []


async def test_the_first_pass_waits_a_period_unless_at_once() -> None:
    ran = asyncio.Event()

    async def one_pass() -> None:
        ran.set()

    loops = Loops()
    loops.start([every("later", 30, one_pass)])
    await asyncio.sleep(0.05)
    assert not ran.is_set()
    await loops.stop(grace_seconds=1)  # asked to stop during the first wait: returns at once


async def test_two_loops_of_one_name_are_refused() -> None:
    async def nothing(stopping: asyncio.Event) -> None:
        await stopping.wait()

    loops = Loops()
    with pytest.raises(ValueError):
        loops.start([Loop("same", nothing), Loop("same", nothing)])
    await loops.stop(grace_seconds=1)
