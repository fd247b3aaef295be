"""The partition rollover: premake the monthly partitions, move rows out of the default
partitions, close months past their grace period (read-only in the database), and retire
months past the retention. Each DDL step is its own short transaction; steps of concurrent
runs take turns (advisory lock) and re-read the state, so the flow is idempotent.

    cangflow run rollover
"""

from __future__ import annotations

import time
from datetime import date

from prefect import flow, get_run_logger

from flows.console import summary_text
from flows.monitoring import run_metrics
from flows.snapshot import snapshot_flow
from tasks.reporting import table_artifact
from tasks.rollover import (
    close_due_months,
    premake_partitions,
    prune_expired_keys,
    reopened_months,
    rescue_default_rows,
    retire_old_partitions,
)
from warehouse.history import calendar


def _rollover_flow(today: date | None = None) -> dict:
    logger = get_run_logger()
    started = time.perf_counter()
    today = today or calendar.today()
    made = premake_partitions(today)
    moved = rescue_default_rows()
    reopened = reopened_months()
    if reopened:
        # A reopened month closes again only over rebuilt snapshots.
        logger.info("reopened months %s: rebuilding snapshots first", [str(m) for m in reopened])
        snapshot_flow()
    closing = close_due_months(today)
    retired = retire_old_partitions(today)
    keys_pruned = prune_expired_keys()
    rows = (
        [
            {
                "step": "premake",
                "partition": m["partition"],
                "result": "created",
                "rows moved": m["rows_moved"],
            }
            for m in made
            if m["created"]
        ]
        + [
            {
                "step": "default rows",
                "partition": m["partition"],
                "result": "moved out of default",
                "rows moved": m["rows_moved"],
            }
            for m in moved
        ]
        + [
            {
                "step": "close",
                "partition": c["month"],
                "result": "closed" if c["closed"] else f"open: {c['why']}",
                "rows moved": 0,
            }
            for c in closing
        ]
        + [
            {
                "step": "retention",
                "partition": r["partition"],
                "result": r["summary"],
                "rows moved": 0,
            }
            for r in retired
        ]
    )
    summary = {
        "partitions_created": [m["partition"] for m in made + moved if m["created"]],
        "rows_moved_from_default": sum(m["rows_moved"] for m in made + moved),
        "months_closed": [c["month"] for c in closing if c["closed"]],
        "months_left_open": {c["month"]: c["why"] for c in closing if not c["closed"]},
        "partitions_retired": [r["partition"] for r in retired],
        "idempotency_keys_pruned": keys_pruned,
        "seconds": round(time.perf_counter() - started, 3),
    }
    table_artifact(
        "partition-rollover",
        rows,
        f"Rollover: {len(summary['partitions_created'])} partition(s) created, "
        f"{summary['rows_moved_from_default']} row(s) moved out of default, {len(summary['months_closed'])} month(s) closed, "
        f"{len(summary['partitions_retired'])} partition(s) retired, {summary['seconds']} s",
    )
    logger.info("summary: %s", summary_text(summary))
    return summary


@flow(name="partition-rollover", timeout_seconds=3 * 3600)
def rollover_flow(today: date | None = None) -> dict:
    """partition-rollover: see the module docstring. The run records and pushes its own metrics."""
    with run_metrics("rollover") as run:
        summary = _rollover_flow(today)
        run.items = (
            len(summary["partitions_created"])
            + len(summary["months_closed"])  # partitions and months handled
            + len(summary["partitions_retired"])
        )
        return summary
