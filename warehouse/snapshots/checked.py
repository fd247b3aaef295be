"""A day as a snapshot run writes it: built and chain-checked in one transaction, so a
snapshot that fails its check is never committed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.orm import Session

from warehouse.errors import WarehouseError
from warehouse.snapshots.build import DayBuilt, build_day
from warehouse.snapshots.verify import CheckResult, verify_day


class SnapshotCheckFailed(WarehouseError):
    def __init__(self, result: CheckResult):
        self.result = result
        super().__init__(str(result))


@dataclass(frozen=True)
class DayOutcome:
    """One day of a snapshot run as it is reported: built (or skipped, already built and
    clean) and checked, or refused by its chain check and rolled back."""

    day: date
    mode: str  # "full", "incremental", "skipped", or "failed" (the check refused it)
    rows: int
    seconds: float | None
    check: str  # "ok", "already built", or what the check found
    wrong_from: date | None = None  # failed: the oldest day the next run must rebuild

    @property
    def ok(self) -> bool:
        return self.mode != "failed"

    @property
    def built(self) -> bool:
        return self.mode in ("full", "incremental")

    @classmethod
    def of(cls, built: DayBuilt, check: CheckResult | None) -> DayOutcome:
        verdict = "ok" if check is not None else "already built"
        return cls(built.day, built.mode, built.rows, round(built.seconds, 3), verdict)

    @classmethod
    def refused(cls, day: date, failed: SnapshotCheckFailed) -> DayOutcome:
        return cls(day, "failed", 0, None, str(failed.result), failed.result.wrong_from)


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
