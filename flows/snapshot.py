"""The snapshot flow: dirty days first, then every day up to yesterday (or exactly the days
asked for), each built and chain-checked in its own transaction, then the latest snapshot
checked against the live balances. A failed check fails the run, names the keys, and leaves
the days dirty so the next run rebuilds them.

    cangflow run snapshot [--date D | --from D1 --to D2]
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from prefect import flow, get_run_logger

from flows.console import summary_text
from flows.monitoring import run_metrics
from tasks import reporting
from tasks.quality import QualityGateFailed, run_suite
from tasks.snapshot import (
    audit_snapshot_chain,
    build_snapshot_day,
    ensure_snapshot_partitions,
    mark_snapshot_dirty,
    plan_snapshot,
    verify_latest_snapshot,
)
from warehouse.errors import WarehouseError
from warehouse.snapshots import DayOutcome, SnapshotPlan


class SnapshotRunFailed(WarehouseError):
    pass


def _snapshot_flow(
    day: date | None = None, start: date | None = None, end: date | None = None
) -> dict[str, Any]:
    logger = get_run_logger()
    started = time.perf_counter()
    plan = plan_snapshot(day, start, end)
    logger.info("plan: %s", plan.describe())
    if plan.days:
        run_suite("stock_balance")  # the data snapshots are built from must pass its suite first
        ensure_snapshot_partitions(plan.days)
    days, failure, next_step = _build_days(plan, logger)
    latest_ran = failure is None  # a day that failed its check ends the run before this one
    latest = verify_latest_snapshot() if latest_ran else None
    if failure is None and days:
        _check_newest_day(days[-1].day)
    if failure is None and latest is not None and not latest.ok:
        repair = audit_snapshot_chain()
        logger.warning("latest snapshot check failed; %s", repair.audit)
        failure, next_step = str(latest), repair.next_step()
    checked = reporting.latest_check_text(latest, ran=latest_ran)
    summary = reporting.snapshot_summary(
        plan, days, checked, time.perf_counter() - started, ok=failure is None
    )
    reporting.snapshot_artifact(plan, days, summary)
    logger.info("summary: %s", summary_text(summary))
    if failure is not None:
        raise SnapshotRunFailed(f"snapshot check failed: {failure}; {next_step}")
    return summary


def _build_days(plan: SnapshotPlan, logger: Any) -> tuple[list[DayOutcome], str | None, str | None]:
    """Each planned day in order; the first whose chain check fails ends the run, with the days
    from the wrong one marked dirty for the next run."""
    days: list[DayOutcome] = []
    explicit = bool(plan.requested)
    for number, current in enumerate(plan.days, 1):
        outcome = build_snapshot_day(current, force=explicit or current in plan.dirty)
        days.append(outcome)
        logger.info(
            "%d/%d %s %s: %s rows in %s s, check %s",
            number,
            len(plan.days),
            current,
            outcome.mode,
            f"{outcome.rows:,}",
            outcome.seconds,
            outcome.check,
        )
        if not outcome.ok:
            # This day (or its base, when the base was altered) and every later one are stale:
            # the next run starts over from there.
            assert outcome.wrong_from is not None  # a failed check names its oldest wrong day
            mark_snapshot_dirty(outcome.wrong_from, f"chain check failed: {outcome.check}"[:1000])
            return (
                days,
                outcome.check,
                f"days from {outcome.wrong_from} are marked dirty for the next run",
            )
    return days, None, None


def _check_newest_day(checked: date) -> None:
    try:
        run_suite("stock_snapshot", day=str(checked))
    except QualityGateFailed as failed:
        # The day is committed, so a rerun would find nothing to build and run no suite:
        # flag it, and every run rebuilds it and runs the suite again until one passes.
        mark_snapshot_dirty(checked, f"quality suite failed: {failed}"[:1000])
        raise


@flow(name="snapshot", timeout_seconds=3 * 3600)
def snapshot_flow(
    day: date | None = None, start: date | None = None, end: date | None = None
) -> dict[str, Any]:
    """snapshot: see the module docstring. The run records and pushes its own metrics."""
    with run_metrics("snapshot") as run:
        summary = _snapshot_flow(day, start, end)
        run.items = summary["rows"]  # snapshot rows written
        return summary
