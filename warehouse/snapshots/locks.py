"""Advisory locks of the snapshot jobs. Builds of different days run side by side (shared lock);
the scan for backdated movements runs alone (exclusive), so it never checks a day half-built."""

from __future__ import annotations

from datetime import date

from sqlalchemy import text
from sqlalchemy.orm import Session

SNAPSHOT_LOCK = 0x736E6170  # "snap"
_ALL_DAYS = 0


def builds_shared(session: Session) -> None:
    session.execute(
        text("SELECT pg_advisory_xact_lock_shared(:ns, :key)"),
        {"ns": SNAPSHOT_LOCK, "key": _ALL_DAYS},
    )


def scan_exclusive(session: Session) -> None:
    session.execute(
        text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": SNAPSHOT_LOCK, "key": _ALL_DAYS}
    )


def one_day(session: Session, day: date) -> None:
    """Two runs of one date take turns; the second sees the first's committed rows."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(:ns, :key)"),
        {"ns": SNAPSHOT_LOCK, "key": day.toordinal()},
    )
