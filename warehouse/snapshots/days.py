"""Snapshot days are UTC days, like the ledger's monthly partitions: one calendar for both."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def day_end(day: date) -> datetime:
    """The first instant after `day` (movements of the day are < this)."""
    return day_start(day + timedelta(days=1))


def day_of(moment: datetime) -> date:
    return moment.astimezone(timezone.utc).date()


def today_utc() -> date:
    return datetime.now(timezone.utc).date()


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
