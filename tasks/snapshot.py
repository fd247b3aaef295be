"""Tasks of the snapshot flow: each opens one transaction and calls one warehouse function."""

from __future__ import annotations

from datetime import date

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
            lambda s, m=month: partitions.ensure_month(
                s, "stock_snapshot", m, lock_timeout_ms=settings.ddl_lock_timeout_ms
            ),
            attempts=settings.ddl_attempts,
        )
        if made.created:
            created.append(made.name)
    return created


@task(name="snapshot-day", task_run_name="snapshot-{day}", retries=2, retry_delay_seconds=[2, 10])
def build_snapshot_day(day: date, force: bool) -> dict:
    """Build and chain-check one day in one transaction. A failed check is a result, not a
    retry: the rows are rolled back and the flow marks the day dirty."""
    try:
        with database().session() as session:
            built, check = snapshots.build_checked_day(session, day, force=force)
    except snapshots.SnapshotCheckFailed as failed:
        return {
            "day": day,
            "mode": "failed",
            "rows": 0,
            "seconds": None,
            "check": str(failed.result),
            "ok": False,
            "wrong_from": failed.result.wrong_from,
        }
    return {
        "day": day,
        "mode": built.mode,
        "rows": built.rows,
        "seconds": round(built.seconds, 3),
        "check": "ok" if check else "already built",
        "ok": True,
        "wrong_from": None,
    }


@task(name="snapshot-latest-check", retries=2, retry_delay_seconds=5)
def verify_latest_snapshot() -> dict:
    with database().session() as session:
        result = snapshots.verify_latest(session)
    if result is None:
        return {"ok": True, "day": None, "message": "no snapshot yet"}
    return {"ok": result.ok, "day": result.day, "message": str(result), "altered": result.altered}


@task(name="snapshot-chain-audit", retries=1, retry_delay_seconds=10)
def audit_snapshot_chain() -> dict:
    """Prove every retained day and mark dirty from the oldest wrong one (committed), so the
    next run rebuilds from a day that is right."""
    with database().session() as session:
        audit = snapshots.audit_chain(session)
        marked = snapshots.repair(session, audit) if audit.unrepairable is None else None
    return {
        "ok": audit.ok,
        "message": str(audit),
        "marked_from": marked,
        "unrepairable": audit.unrepairable,
    }


@task(name="snapshot-mark-dirty", retries=2, retry_delay_seconds=5)
def mark_snapshot_dirty(day: date, reason: str) -> None:
    with database().session() as session:
        snapshots.mark_dirty(session, day, reason)
