"""The partition rollover: premake the monthly partitions, move rows out of the default
partitions, close months past their grace period (read-only in the database), and retire
months past the retention. Each DDL step is its own short transaction; steps of concurrent
runs take turns (advisory lock) and re-read the state, so the flow is idempotent.

    cangflow run rollover
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from prefect import flow, get_run_logger

from flows.console import summary_text
from flows.monitoring import run_metrics
from flows.snapshot import snapshot_flow
from tasks import reporting
from tasks.rollover import (
    close_due_months,
    premake_partitions,
    prune_expired_keys,
    reopened_months,
    rescue_default_rows,
    retire_old_partitions,
)
from warehouse.history import calendar


def _rollover_flow(today: date | None = None) -> dict[str, Any]:
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
    summary = reporting.rollover_summary(
        made, moved, closing, retired, keys_pruned, time.perf_counter() - started
    )
    reporting.rollover_artifact(made, moved, closing, retired, summary)
    logger.info("summary: %s", summary_text(summary))
    return summary


@flow(name="partition-rollover", timeout_seconds=3 * 3600)
def rollover_flow(today: date | None = None) -> dict[str, Any]:
    """partition-rollover: see the module docstring. The run records and pushes its own metrics."""
    with run_metrics("rollover") as run:
        summary = _rollover_flow(today)
        run.items = (
            len(summary["partitions_created"])
            + len(summary["months_closed"])  # partitions and months handled
            + len(summary["partitions_retired"])
        )
        return summary
