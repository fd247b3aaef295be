"""Whether a feed is news. An ERP that stops exporting leaves yesterday's file in the folder;
reconciling it again would look like success every night while nobody notices the ERP went
quiet. So a feed that is too old, or that was reconciled before, or a folder with no feed at
all, ends the run as `stale`: its own exit code (4), a Prefect event, a metric an alert watches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from warehouse.history import calendar


@dataclass(frozen=True)
class Stale:
    reason: str
    feed: str | None = None
    as_of: datetime | None = None
    run_id: int | None = None


def newest_feed(folder: Path) -> Path | None:
    """The most recently written *.csv in the feed folder."""
    feeds = (
        sorted(folder.glob("*.csv"), key=lambda path: (path.stat().st_mtime, path.name))
        if folder.is_dir()
        else []
    )
    return feeds[-1] if feeds else None


def no_feed(folder: Path) -> Stale:
    where = "does not exist" if not folder.is_dir() else "holds no *.csv feed"
    return Stale(f"the feed folder {folder} {where}: the ERP sent nothing")


def too_old(as_of: datetime, max_age_hours: float) -> str | None:
    """Why a feed cut at `as_of` is too old to reconcile now; None when it is fresh enough."""
    age_hours = (calendar.now() - as_of).total_seconds() / 3600
    if age_hours <= max_age_hours:
        return None
    return (
        f"the feed's as_of {as_of.isoformat()} is {age_hours:.1f} h old, over the limit of {max_age_hours:g} h: "
        "has the ERP stopped sending? (a late feed on purpose: --max-feed-age-hours)"
    )


def reconciled_before(feed: str, run_id: int) -> str:
    return (
        f"feed {feed} was reconciled before with these settings (run {run_id}): no new feed, "
        "has the ERP stopped sending?"
    )
