"""Build one day's snapshot: replace the day's rows in one transaction (a rerun gives the same
rows), incrementally from the latest earlier snapshot, or from the whole ledger when none exists."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, text
from sqlalchemy.orm import Session

from warehouse.errors import InvalidArgument
from warehouse.history import calendar
from warehouse.history.calendar import day_end
from warehouse.settings import get_settings
from warehouse.snapshots import locks, statements
from warehouse.snapshots.history_floor import first_retained_day
from warehouse.snapshots.watermark import safe_watermark


@dataclass(frozen=True)
class DayBuilt:
    day: date
    mode: str  # "full", "incremental", or "skipped" (already built and clean)
    rows: int
    seconds: float
    base_day: date | None = None
    watermark: datetime | None = None


def require_ended(day: date, today: date | None = None) -> None:
    today = today or calendar.today()
    if day >= today:
        raise InvalidArgument(
            f"snapshot date {day} has not ended yet (today is {today} in {calendar.zone_name()}); the latest is yesterday"
        )


def build_day(
    session: Session, day: date, *, force: bool = True, today: date | None = None
) -> DayBuilt:
    """Write the closing stock of `day`. Without `force`, a day already built and not dirty is
    left as it is (a concurrent run built it first)."""
    require_ended(day, today)
    started = time.perf_counter()
    # Connections keep generic plans (db.py) for the hot reads; a day's build is one big
    # statement whose plan should see its actual bounds and row counts.
    session.execute(text("SELECT set_config('plan_cache_mode', 'auto', true)"))
    locks.builds_shared(session)
    locks.one_day(session, day)
    if not force:
        current = session.execute(statements.THIS_DAY, {"day": day}).first()
        if current is not None and not current.dirty:
            return DayBuilt(
                day, "skipped", 0, time.perf_counter() - started, watermark=current.watermark
            )
    watermark = safe_watermark(session, margin_s=get_settings().snapshot_visibility_margin_s)
    base = session.execute(statements.BASE_DAY, {"day": day}).first()
    session.execute(statements.DELETE_DAY, {"day": day})
    if base is not None:
        # Session.execute is typed as returning a Result; a DML statement's is a CursorResult.
        rows = cast(
            CursorResult[Any],
            session.execute(statements.INSERT_INCREMENTAL, increment_params(day, watermark, base)),
        ).rowcount
        mode = "incremental"
    else:
        floor = first_retained_day(session)
        if floor is not None and day >= floor:
            raise InvalidArgument(
                f"no snapshot before {day} to build on, and the ledger before {floor} is archived"
            )
        rows = cast(
            CursorResult[Any],
            session.execute(
                statements.INSERT_FULL,
                {"day": day, "day_end": day_end(day), "watermark": watermark},
            ),
        ).rowcount
        mode = "full"
    seconds = time.perf_counter() - started
    session.execute(
        statements.RECORD_DAY,
        {"day": day, "watermark": watermark, "mode": mode, "rows": rows, "seconds": seconds},
    )
    session.execute(statements.CLEAR_DIRTY, {"day": day})
    return DayBuilt(
        day, mode, rows, seconds, base.snapshot_date if base is not None else None, watermark
    )


def increment_params(day: date, watermark: datetime, base) -> dict:
    """Parameters of the incremental formula (see `statements`) from base snapshot `base`."""
    return {
        "day": day,
        "day_end": day_end(day),
        "watermark": watermark,
        "base_day": base.snapshot_date,
        "base_end": day_end(base.snapshot_date),
        "sign": 1 if watermark >= base.watermark else -1,
        "low": min(watermark, base.watermark),
        "high": max(watermark, base.watermark),
    }
