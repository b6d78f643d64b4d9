"""The scheduler inside the groups service runs what is due, once per period, with two replicas."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

from sqlalchemy import select

from services.common.clock import ManualClock
from services.common.rules import Rules
from services.common.server import Server
from services.groups.app import GroupsApp
from services.groups.models import JobRun
from tests.support.inprocess import migrate, settings_for


async def test_two_replicas_run_each_period_once(db_url: str, rules: Rules) -> None:
    await migrate("groups", db_url)
    clock = ManualClock(datetime(2026, 7, 1, 0, 10, tzinfo=UTC))
    settings = dataclasses.replace(settings_for("groups", db_url), job_interval_seconds=0.05)
    servers = [Server(GroupsApp(settings, rules, clock), serve_metrics_http=False) for _ in range(2)]
    for server in servers:
        await server.start()
    try:
        app = servers[0].app
        assert isinstance(app, GroupsApp)
        for _ in range(100):  # the loops run every 50 ms; give them a few rounds
            async with app.db.transaction() as session:
                runs = sorted((r.job, r.period) for r in await session.scalars(select(JobRun)))
            if len(runs) == 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # more rounds on both replicas change nothing
        async with app.db.transaction() as session:
            runs = sorted((r.job, r.period) for r in await session.scalars(select(JobRun)))
        assert runs == [("daily_counts", "2026-06-30"), ("levels", "2026-06")]
    finally:
        for server in servers:
            await server.stop()
