"""Explicit clocks: every component takes one, so tests and replays control time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

OSLO = ZoneInfo("Europe/Oslo")

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until moved: for tests, `--as-of` and FORLOP_CLOCK."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at = self.at + timedelta(**delta)

    def set(self, at: datetime) -> None:
        self.at = at


def local_date(at: datetime) -> date:
    """The Europe/Oslo calendar date of an instant: deadlines count in local dates."""
    return at.astimezone(OSLO).date()


def parse_time(value: str) -> datetime:
    """ISO 8601 date or date-time from the command line, as an aware datetime.

    A bare date is read as 12:00 Europe/Oslo so that "as of a day" includes that day's events.
    """
    if len(value) == 10:
        d = date.fromisoformat(value)
        return datetime(d.year, d.month, d.day, 12, 0, tzinfo=OSLO)
    at = datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=OSLO)


def as_utc(at: datetime) -> datetime:
    """An instant as stored by either store, in UTC. SQLite's DateTime keeps no offset: the stores
    write instants in UTC (`stored_instant`), so a value read back without one is UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def stored_instant(at: datetime) -> datetime:
    """An aware instant as written to a DateTime column: in UTC, so SQLite's offset-less text orders
    and compares as the instants do, and reads back as `as_utc` takes it."""
    return at.astimezone(UTC)
