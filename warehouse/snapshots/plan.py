"""Which days a snapshot run builds, in order: dirty days first (oldest first, since each day
builds on the one before), then every day from the latest snapshot up to yesterday."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.errors import InvalidArgument
from warehouse.history import calendar, partitions
from warehouse.history.calendar import day_of, days_between
from warehouse.snapshots.backdated import mark_backdated
from warehouse.snapshots.build import require_ended

MAX_RANGE_DAYS = 3660

_DIRTY = text("SELECT snapshot_date FROM snapshot_dirty WHERE snapshot_date < :today ORDER BY 1")
_LATEST = text("SELECT max(snapshot_date) FROM snapshot_day")
_FIRST = text("SELECT min(snapshot_date) FROM snapshot_day")


@dataclass(frozen=True)
class SnapshotPlan:
    days: tuple[date, ...]
    dirty: tuple[date, ...] = ()
    newly_marked: tuple[date, ...] = ()
    catch_up: tuple[date, ...] = ()
    requested: tuple[date, ...] = field(default=())

    def describe(self) -> str:
        if self.requested:
            return f"{len(self.requested)} requested day(s) {_span(self.requested)}"
        return (
            f"{len(self.dirty)} dirty day(s) {_span(self.dirty)} ({len(self.newly_marked)} newly found), "
            f"{len(self.catch_up)} new day(s) {_span(self.catch_up)}"
        )


def _span(days: tuple[date, ...]) -> str:
    if not days:
        return "-"
    return str(days[0]) if len(days) == 1 else f"{days[0]}..{days[-1]}"


def plan_run(
    session: Session,
    *,
    day: date | None = None,
    start: date | None = None,
    end: date | None = None,
    today: date | None = None,
) -> SnapshotPlan:
    """The days to build. With a date or a range, exactly those (a backfill); without, the scan
    for backdated movements runs first and marks what it finds (the caller commits that)."""
    today = today or calendar.today()
    requested = requested_days(day=day, start=start, end=end, today=today)
    if requested:
        return SnapshotPlan(days=requested, requested=requested)
    newly = tuple(mark_backdated(session))
    dirty = tuple(session.execute(_DIRTY, {"today": today}).scalars())
    latest = session.execute(_LATEST).scalar()
    first = latest + timedelta(days=1) if latest is not None else first_movement_day(session)
    yesterday = today - timedelta(days=1)
    catch_up = (
        tuple(d for d in days_between(first, yesterday) if d not in dirty)
        if first is not None
        else ()
    )
    earlier = _days_before_the_first(session, dirty)
    return SnapshotPlan(
        days=earlier + dirty + catch_up,
        dirty=dirty,
        newly_marked=newly,
        catch_up=earlier + catch_up,
    )


def _days_before_the_first(session: Session, dirty: tuple[date, ...]) -> tuple[date, ...]:
    """The snapshots begin on the day of the oldest movement. A movement dated before that day
    (booked late, and still inside the history floor) marks the first day dirty; the days from
    its own day up to the first are built too, so that every month with movements has the
    snapshot of its last day that closing and retention need (without it, a retired month's
    movements would be in no opening balance)."""
    if not dirty:
        return ()
    first_built = session.execute(_FIRST).scalar()
    if first_built != dirty[0]:
        return ()
    oldest = first_movement_day(session)
    if oldest is None or oldest >= first_built:
        return ()
    return tuple(days_between(oldest, first_built - timedelta(days=1)))


def requested_days(
    *,
    day: date | None = None,
    start: date | None = None,
    end: date | None = None,
    today: date | None = None,
) -> tuple[date, ...]:
    """The days a person asked for (a date or a range), checked; () when none was asked for."""
    today = today or calendar.today()
    if day is not None and (start is not None or end is not None):
        raise InvalidArgument("give either a date or a range (--from/--to), not both")
    if day is not None:
        require_ended(day, today)
        return (day,)
    if start is None and end is None:
        return ()
    if start is None or end is None:
        raise InvalidArgument("a range needs both --from and --to")
    if start > end:
        raise InvalidArgument(f"--from {start} is after --to {end}")
    require_ended(end, today)
    if (end - start).days >= MAX_RANGE_DAYS:
        raise InvalidArgument(f"range {start}..{end} is longer than {MAX_RANGE_DAYS} days")
    return tuple(days_between(start, end))


def first_movement_day(session: Session) -> date | None:
    """The day of the oldest movement: the default partition's oldest, and the oldest of the
    first monthly partition that has rows (no index leads with occurred_at, so a min() over
    the whole ledger would read all of it)."""
    raw = raw_sql.driver(session)
    every = partitions.attached(session, "stock_movement")
    ordered = [p for p in every if p.month is None] + [p for p in every if p.month is not None]
    found: list[datetime] = []
    for partition in ordered:
        query = sql.SQL("SELECT min(occurred_at) FROM {}").format(sql.Identifier(partition.name))
        oldest = session.connection().exec_driver_sql(query.as_string(raw)).scalar()
        if oldest is not None:
            found.append(oldest)
            if partition.month is not None:
                break
    return day_of(min(found)) if found else None
