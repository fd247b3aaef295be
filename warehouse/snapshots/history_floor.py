"""Where the hot ledger begins once old months are archived: before it, only snapshots know."""

from __future__ import annotations

from datetime import date

from sqlalchemy import text
from sqlalchemy.orm import Session

_LAST_RETIRED = text("SELECT max(month) FROM history_month WHERE state IN ('archived', 'dropped')")


def first_retained_day(session: Session) -> date | None:
    """The first day of the oldest month still in the ledger, or None when none was retired."""
    last = session.execute(_LAST_RETIRED).scalar()
    return None if last is None else first_day_after(last)


def first_day_after(retired_month: date) -> date:
    """The first day of the month after a retired one: where the retained ledger begins."""
    return date(retired_month.year + (retired_month.month == 12), retired_month.month % 12 + 1, 1)
