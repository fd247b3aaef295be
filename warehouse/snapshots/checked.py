"""A day as a snapshot run writes it: built and chain-checked in one transaction, so a
snapshot that fails its check is never committed."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from warehouse.errors import WarehouseError
from warehouse.snapshots.build import DayBuilt, build_day
from warehouse.snapshots.verify import CheckResult, verify_day


class SnapshotCheckFailed(WarehouseError):
    def __init__(self, result: CheckResult):
        self.result = result
        super().__init__(str(result))


def build_checked_day(
    session: Session, day: date, *, force: bool = True, today: date | None = None
) -> tuple[DayBuilt, CheckResult | None]:
    """Build `day` and run its chain check; raises SnapshotCheckFailed (the caller rolls the
    build back, and marks the day dirty) when a key differs."""
    built = build_day(session, day, force=force, today=today)
    if built.mode == "skipped":
        return built, None
    result = verify_day(session, day)
    if not result.ok:
        raise SnapshotCheckFailed(result)
    return built, result
