"""Tasks of the snapshot flow: each opens one transaction and calls one warehouse function."""

from __future__ import annotations

from datetime import date
from functools import partial

from prefect import task

from tasks.database import database
from warehouse import snapshots
from warehouse.db import retry
from warehouse.history import partitions
from warehouse.settings import get_settings


@task(name="snapshot-plan", retries=2, retry_delay_seconds=5)
def plan_snapshot(day: date | None, start: date | None, end: date | None) -> snapshots.SnapshotPlan:
    """Finds backdated movements (marking their days dirty) and lists the days to build."""
    with database().session() as session:
        return snapshots.plan_run(session, day=day, start=start, end=end)


@task(name="snapshot-partitions", retries=2, retry_delay_seconds=5)
def ensure_snapshot_partitions(days: tuple[date, ...]) -> list[str]:
    settings = get_settings()
    created = []
    for month in sorted({partitions.month_start(d) for d in days}):
        made = retry.ddl_step(
            database("owner"),
            partial(
                partitions.ensure_month,
                table="stock_snapshot",
                month=month,
                lock_timeout_ms=settings.ddl_lock_timeout_ms,
            ),
            attempts=settings.ddl_attempts,
        )
        if made.created:
            created.append(made.name)
    return created


@task(name="snapshot-day", task_run_name="snapshot-{day}", retries=2, retry_delay_seconds=[2, 10])
def build_snapshot_day(day: date, force: bool) -> snapshots.DayOutcome:
    """Build and chain-check one day in one transaction. A failed check is a result, not a
    retry: the rows are rolled back (the exception leaves the session) and the flow marks the
    day dirty."""
    try:
        with database().session() as session:
            built, check = snapshots.build_checked_day(session, day, force=force)
    except snapshots.SnapshotCheckFailed as failed:
        return snapshots.DayOutcome.refused(day, failed)
    return snapshots.DayOutcome.of(built, check)


@task(name="snapshot-latest-check", retries=2, retry_delay_seconds=5)
def verify_latest_snapshot() -> snapshots.CheckResult | None:
    """The newest snapshot against the live balances; None when there is no snapshot yet."""
    with database().session() as session:
        return snapshots.verify_latest(session)


@task(name="snapshot-chain-audit", retries=1, retry_delay_seconds=10)
def audit_snapshot_chain() -> snapshots.ChainRepair:
    """Prove every retained day and mark dirty from the oldest wrong one (committed), so the
    next run rebuilds from a day that is right."""
    with database().session() as session:
        return snapshots.audit_and_repair(session)


@task(name="snapshot-mark-dirty", retries=2, retry_delay_seconds=5)
def mark_snapshot_dirty(day: date, reason: str) -> None:
    with database().session() as session:
        snapshots.mark_dirty(session, day, reason)
