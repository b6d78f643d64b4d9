"""The marketplace's calendar (SPEC D1): days, months and years in China Standard Time.

Every rule that speaks of a day, a month or a year counts in one time zone,
the ``[calendar]`` offset of the rules file (UTC+8 by default): E3's T+2,
V2's "from the next day", T7's daily counts, T8's months, P1–P3, check-ins.
Instants stay timezone-aware UTC everywhere else; only this module turns
them into calendar dates and back. The offset is fixed (China keeps no
daylight saving time), so a day is always 24 hours long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

from dateutil.relativedelta import relativedelta


@dataclass(frozen=True)
class MarketCalendar:
    utc_offset_hours: int

    @property
    def zone(self) -> timezone:
        return timezone(timedelta(hours=self.utc_offset_hours))

    def local(self, instant: datetime) -> datetime:
        """The instant as the marketplace's wall clock shows it."""
        return instant.astimezone(self.zone)

    def show(self, instant: datetime) -> str:
        """The instant as refusal texts show it: the marketplace's wall clock, with its offset."""
        return f"{self.local(instant):%Y-%m-%d %H:%M} UTC{self.utc_offset_hours:+d}"

    def day(self, instant: datetime) -> date:
        return self.local(instant).date()

    def day_key(self, instant: datetime) -> str:
        """``YYYY-MM-DD`` of the marketplace day the instant falls on."""
        return self.day(instant).isoformat()

    def month_key(self, instant: datetime) -> str:
        """``YYYY-MM`` of the marketplace month the instant falls in."""
        local = self.local(instant)
        return f"{local.year:04d}-{local.month:02d}"

    def year(self, instant: datetime) -> int:
        return self.local(instant).year

    def day_start(self, day: date) -> datetime:
        """The UTC instant a marketplace day begins (00:00 local)."""
        return datetime.combine(day, time(0), tzinfo=self.zone).astimezone(UTC)

    def next_day_start(self, instant: datetime) -> datetime:
        """The UTC instant the marketplace day after the instant's begins."""
        return self.day_start(self.day(instant) + timedelta(days=1))

    def month_start(self, month: str) -> datetime:
        """The UTC instant a ``YYYY-MM`` marketplace month begins."""
        year, number = (int(part) for part in month.split("-"))
        return self.day_start(date(year, number, 1))

    def year_start(self, year: int) -> datetime:
        """The UTC instant a marketplace year begins (Jan 1 00:00 local)."""
        return self.day_start(date(year, 1, 1))

    def months_before(self, instant: datetime, months: int) -> datetime:
        """The same local wall-clock moment ``months`` calendar months earlier, as UTC.

        The day is clipped to the shorter month's last day (Aug 31 − 6 months →
        Feb 28, or 29 in a leap year), as ``dateutil.relativedelta`` counts.
        """
        earlier: datetime = self.local(instant) - relativedelta(months=months)
        return earlier.astimezone(UTC)

    def days_after(self, instant: datetime, days: int) -> date:
        """The marketplace day ``days`` calendar days after the instant's own (T+n)."""
        return self.day(instant) + timedelta(days=days)
