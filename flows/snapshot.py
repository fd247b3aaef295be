"""The snapshot flow: dirty days first, then every day up to yesterday (or exactly the days
asked for), each built and chain-checked in its own transaction, then the latest snapshot
checked against the live balances. A failed check fails the run, names the keys, and leaves
the days dirty so the next run rebuilds them.

    cangflow run snapshot [--date D | --from D1 --to D2]
"""

from __future__ import annotations

import time
from datetime import date

from prefect import flow, get_run_logger

from flows.console import summary_text
from flows.monitoring import run_metrics
from tasks.quality import QualityGateFailed, run_suite
from tasks.reporting import table_artifact
from tasks.snapshot import (
    audit_snapshot_chain,
    build_snapshot_day,
    ensure_snapshot_partitions,
    mark_snapshot_dirty,
    plan_snapshot,
    verify_latest_snapshot,
)
from warehouse.errors import WarehouseError


class SnapshotRunFailed(WarehouseError):
    pass


def _snapshot_flow(
    day: date | None = None, start: date | None = None, end: date | None = None
) -> dict:
    logger = get_run_logger()
    started = time.perf_counter()
    plan = plan_snapshot(day, start, end)
    logger.info("plan: %s", plan.describe())
    if plan.days:
        run_suite("stock_balance")  # the data snapshots are built from must pass its suite first
        ensure_snapshot_partitions(plan.days)
    built, failure, next_step = _build_days(plan, logger)
    latest = (
        verify_latest_snapshot()
        if failure is None
        else {"ok": False, "day": None, "message": "not run"}
    )
    if failure is None and built:
        _check_newest_day(built[-1]["day"])
    if failure is None and not latest["ok"]:
        failure, next_step = latest["message"], _after_latest_check_failed(logger)
    summary = _summary(plan, built, latest, started, ok=failure is None)
    _report(plan, built, summary, latest)
    logger.info("summary: %s", summary_text(summary))
    if failure is not None:
        raise SnapshotRunFailed(f"snapshot check failed: {failure}; {next_step}")
    return summary


def _build_days(plan, logger) -> tuple[list[dict], str | None, str | None]:
    """Each planned day in order; the first whose chain check fails ends the run, with the days
    from the wrong one marked dirty for the next run."""
    built: list[dict] = []
    explicit = bool(plan.requested)
    for number, current in enumerate(plan.days, 1):
        result = build_snapshot_day(current, force=explicit or current in plan.dirty)
        result["dirty_rebuilt"] = current in plan.dirty
        built.append(result)
        logger.info(
            "%d/%d %s %s: %s rows in %s s, check %s",
            number,
            len(plan.days),
            current,
            result["mode"],
            f"{result['rows']:,}",
            result["seconds"],
            result["check"],
        )
        if not result["ok"]:
            # This day (or its base, when the base was altered) and every later one are stale:
            # the next run starts over from there.
            mark_snapshot_dirty(
                result["wrong_from"], f"chain check failed: {result['check']}"[:1000]
            )
            return (
                built,
                result["check"],
                f"days from {result['wrong_from']} are marked dirty for the next run",
            )
    return built, None, None


def _check_newest_day(checked: date) -> None:
    try:
        run_suite("stock_snapshot", day=str(checked))
    except QualityGateFailed as failed:
        # The day is committed, so a rerun would find nothing to build and run no suite:
        # flag it, and every run rebuilds it and runs the suite again until one passes.
        mark_snapshot_dirty(checked, f"quality suite failed: {failed}"[:1000])
        raise


def _after_latest_check_failed(logger) -> str:
    """Rebuilding the newest days cannot fix a wrong older day they were built on: the audit
    proves every retained day and marks from the oldest wrong one, or finds the chain right
    (then the live balances are what differs, and no rebuild helps). The next step, in words."""
    audit = audit_snapshot_chain()
    logger.warning("latest snapshot check failed; %s", audit["message"])
    if audit["marked_from"] is not None:
        return f"{audit['message']}: days from {audit['marked_from']} are marked dirty for the next run"
    if audit["unrepairable"]:
        return audit["message"]
    return (
        "every snapshot day agrees with the ledger, so the live balances differ from it; "
        "no rebuild changes that: run `cangflow check` to see which"
    )


def _summary(plan, built: list[dict], latest: dict, started: float, *, ok: bool) -> dict:
    return {
        "days_built": sum(1 for r in built if r["mode"] in ("full", "incremental")),
        "days_skipped": sum(1 for r in built if r["mode"] == "skipped"),
        "rows": sum(r["rows"] for r in built),
        "dirty_rebuilt": [str(d) for d in plan.dirty],
        "newly_dirty": [str(d) for d in plan.newly_marked],
        "latest_check": latest["message"],
        "seconds": round(time.perf_counter() - started, 3),
        "ok": ok,
    }


def _report(plan, built: list[dict], summary: dict, latest: dict) -> None:
    table_artifact(
        "snapshot-run",
        [
            {
                "date": str(r["day"]),
                "mode": r["mode"],
                "rows": r["rows"],
                "seconds": r["seconds"],
                "dirty rebuilt": r["dirty_rebuilt"],
                "check": r["check"],
            }
            for r in built
        ],
        f"Snapshot run: {summary['days_built']} day(s) built, {summary['rows']:,} rows, "
        f"{len(plan.dirty)} dirty day(s) rebuilt, {summary['seconds']} s. Latest check: {latest['message']}",
    )


@flow(name="snapshot", timeout_seconds=3 * 3600)
def snapshot_flow(
    day: date | None = None, start: date | None = None, end: date | None = None
) -> dict:
    """snapshot: see the module docstring. The run records and pushes its own metrics."""
    with run_metrics("snapshot") as run:
        summary = _snapshot_flow(day, start, end)
        run.items = summary["rows"]  # snapshot rows written
        return summary
