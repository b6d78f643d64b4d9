"""Time for every rule that reads it.

Rules never call ``datetime.now()``: they take a ``Clock`` so tests move time
(10-day intervals, T+2, month ends) instead of sleeping. A process started with
``QUN_CLOCK_FILE`` reads "now" from that file, which lets tests move the time
of a whole running stack at once.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to; for tests of plain rules."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 15, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when

    def advance(self, delta: timedelta) -> None:
        self._now += delta


class FileClock:
    """Reads an ISO-8601 instant from a file, re-reading it when it changes.

    Used only when ``QUN_CLOCK_FILE`` is set (tests of running processes).
    The time then stands still between writes, which keeps time rules exact.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._now = datetime.now(UTC)

    def now(self) -> datetime:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return datetime.now(UTC)
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp != self._stamp:
            self._now = parse_instant(self._path.read_text().strip())
            self._stamp = stamp
        return self._now

    @staticmethod
    def write(path: Path, when: datetime) -> None:
        """Sets the time every process reading ``path`` sees."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(when.astimezone(UTC).isoformat())
        os.replace(tmp, path)


def parse_instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def clock_from_env(env: dict[str, str] | None = None) -> Clock:
    path = (env if env is not None else os.environ).get("QUN_CLOCK_FILE")
    return FileClock(Path(path)) if path else SystemClock()
