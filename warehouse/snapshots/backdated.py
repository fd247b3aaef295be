"""Finding snapshots that a backdated movement made stale, and marking dates dirty."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from warehouse.history.calendar import zone_name
from warehouse.settings import get_settings
from warehouse.snapshots import locks, statements
from warehouse.snapshots.watermark import safe_watermark


def mark_backdated(session: Session) -> list[date]:
    """Mark dirty every built day that misses a movement recorded since the last scan; the
    dates newly marked. Runs alone (no build is half done while it looks)."""
    locks.scan_exclusive(session)
    start = session.execute(statements.SCAN_FROM).scalar()
    if start is None:
        return []
    upto = safe_watermark(session, margin_s=get_settings().snapshot_visibility_margin_s)
    # A movement's day is its business day (the zone is a parameter, as in the snapshot's bounds).
    return list(
        session.execute(
            statements.MARK_BACKDATED, {"from": start, "upto": upto, "zone": zone_name()}
        ).scalars()
    )


def mark_dirty(session: Session, day: date, reason: str) -> None:
    """Mark `day` and every built day after it for a rebuild by the next run."""
    session.execute(statements.MARK_DIRTY, {"day": day, "reason": reason})
