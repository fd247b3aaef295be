"""Where the hot ledger begins once old months are archived: before it, only snapshots know."""

from __future__ import annotations

from datetime import date

from sqlalchemy import text
from sqlalchemy.orm import Session

_LAST_RETIRED = text("SELECT max(month) FROM history_month WHERE state IN ('archived', 'dropped')")


def first_retained_day(session: Session) -> date | None:
    """The first day of the oldest month still in the ledger, or None when none was retired."""
    last = session.execute(_LAST_RETIRED).scalar()
    if last is None:
        return None
    return date(last.year + (last.month == 12), last.month % 12 + 1, 1)
