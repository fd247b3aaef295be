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
from tasks.reporting import table_artifact
from tasks.quality import QualityGateFailed, run_suite
from tasks.snapshot import (
    build_snapshot_day,
    ensure_snapshot_partitions,
    mark_snapshot_dirty,
    plan_snapshot,
    verify_latest_snapshot,
)
from warehouse.errors import WarehouseError


class SnapshotRunFailed(WarehouseError):
    pass


def _snapshot_flow(day: date | None = None, start: date | None = None, end: date | None = None) -> dict:
    logger = get_run_logger()
    started = time.perf_counter()
    plan = plan_snapshot(day, start, end)
    logger.info("plan: %s", plan.describe())
    if plan.days:
        run_suite("stock_balance")  # the data snapshots are built from must pass its suite first
        ensure_snapshot_partitions(plan.days)
    built, failure = [], None
    explicit = bool(plan.requested)
    for number, current in enumerate(plan.days, 1):
        result = build_snapshot_day(current, force=explicit or current in plan.dirty)
        result["dirty_rebuilt"] = current in plan.dirty
        built.append(result)
        logger.info("%d/%d %s %s: %s rows in %s s, check %s", number, len(plan.days), current, result["mode"],
                    f"{result['rows']:,}", result["seconds"], result["check"])
        if not result["ok"]:
            failure = result["check"]
            # This day and every later one are stale: the next run starts over from here.
            mark_snapshot_dirty(current, f"chain check failed: {failure}"[:1000])
            break
    latest = verify_latest_snapshot() if failure is None else {"ok": False, "day": None, "message": "not run"}
    if failure is None and built:
        checked = built[-1]["day"]
        try:
            run_suite("stock_snapshot", day=str(checked))
        except QualityGateFailed as failed:
            # The day is committed, so a rerun would find nothing to build and run no suite:
            # flag it, and every run rebuilds it and runs the suite again until one passes.
            mark_snapshot_dirty(checked, f"quality suite failed: {failed}"[:1000])
            raise
    if failure is None and not latest["ok"]:
        failure = latest["message"]
        first = min((r["day"] for r in built if r["mode"] != "skipped"), default=latest["day"])
        mark_snapshot_dirty(first, f"latest snapshot check failed: {failure}"[:1000])
    summary = {
        "days_built": sum(1 for r in built if r["mode"] in ("full", "incremental")),
        "days_skipped": sum(1 for r in built if r["mode"] == "skipped"),
        "rows": sum(r["rows"] for r in built),
        "dirty_rebuilt": [str(d) for d in plan.dirty],
        "newly_dirty": [str(d) for d in plan.newly_marked],
        "latest_check": latest["message"],
        "seconds": round(time.perf_counter() - started, 3),
        "ok": failure is None,
    }
    table_artifact(
        "snapshot-run",
        [{"date": str(r["day"]), "mode": r["mode"], "rows": r["rows"], "seconds": r["seconds"],
          "dirty rebuilt": r["dirty_rebuilt"], "check": r["check"]} for r in built],
        f"Snapshot run: {summary['days_built']} day(s) built, {summary['rows']:,} rows, "
        f"{len(plan.dirty)} dirty day(s) rebuilt, {summary['seconds']} s. Latest check: {latest['message']}",
    )
    logger.info("summary: %s", summary_text(summary))
    if failure is not None:
        raise SnapshotRunFailed(f"snapshot check failed; the days are marked dirty for the next run: {failure}")
    return summary


@flow(name="snapshot")
def snapshot_flow(day: date | None = None, start: date | None = None, end: date | None = None) -> dict:
    """snapshot: see the module docstring. The run records and pushes its own metrics."""
    with run_metrics("snapshot"):
        return _snapshot_flow(day, start, end)
