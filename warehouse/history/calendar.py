"""The business calendar: where the warehouse's days and months begin, and what "now" is.

Days and months are those of the business time zone (`CANGFLOW_BUSINESS_TIMEZONE`, an IANA name,
default UTC): a snapshot is the closing stock at local midnight, a ledger partition holds a local
calendar month. A day is not always 24 hours (DST), so its bounds come from the zone, never from
adding hours. "Now" is the real clock unless `CANGFLOW_CLOCK` pins it (an aware ISO instant), so a
simulation can run two years of nights without sleeping.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from warehouse.errors import InvalidArgument
from warehouse.settings import get_settings


@lru_cache(maxsize=16)
def _zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as missing:
        raise InvalidArgument(
            f"CANGFLOW_BUSINESS_TIMEZONE={name!r} is not an IANA time zone name "
            "(e.g. UTC, Asia/Shanghai, America/New_York)"
        ) from missing


def zone_name() -> str:
    return get_settings().business_timezone


def zone() -> ZoneInfo:
    return _zone_named(zone_name())


def now() -> datetime:
    """The jobs' clock: the real time, or the instant CANGFLOW_CLOCK pins."""
    pinned = get_settings().clock
    return pinned if pinned is not None else datetime.now(UTC)


def today() -> date:
    """The business day of now()."""
    return day_of(now())


def day_of(moment: datetime) -> date:
    return moment.astimezone(zone()).date()


def day_start(day: date) -> datetime:
    """The first instant of `day` in the business zone (as UTC). Where a DST change skips local
    midnight, the day starts at the first local time that exists."""
    local = datetime(day.year, day.month, day.day, tzinfo=zone())
    start = local.astimezone(UTC)
    if day_of(start) != day:  # midnight fell in a gap: zoneinfo used the offset before it
        start = local.replace(fold=1).astimezone(UTC)
    return start


def day_end(day: date) -> datetime:
    """The first instant after `day` (the day's movements are < this)."""
    return day_start(day + timedelta(days=1))


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
