"""The nightly parent flow: snapshot (with its chain check) -> books check (incremental, or
full when one is due: `warehouse.stock.books`) -> partition
rollover -> reconciliation (of the feed folder's newest feed, when a folder is given) -> cache
warmup, as subflows. A failed check or gate stops every later step that would apply data and
fails the run, visibly. A folder without a new feed makes the reconcile step Stale (an event, a
metric, an alert) and the nightly goes on.

    prefect deployment run nightly/nightly     (or: python -m flows.nightly)
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.cache_warmup import warmup_flow
from flows.monitoring import run_metrics
from flows.partition_rollover import rollover_flow
from flows.reconcile import reconcile_flow
from flows.runners import task_runner
from flows.snapshot import snapshot_flow
from tasks import reporting
from tasks.quality import check_books


@flow(name="nightly", timeout_seconds=6 * 3600)
def nightly_flow(
    feed_dir: str | None = None,
    truth: str = "wms",
    auto_approve_limit: int = 0,
    warm_top: int = 1000,
) -> dict:
    with run_metrics("nightly"):
        logger = get_run_logger()
        summary = {"snapshot": snapshot_flow()}
        # The gate: nothing below runs on books that do not add up.
        summary["books"] = reporting.books_summary(check_books())
        summary["rollover"] = rollover_flow()
        if feed_dir:
            # The same flow, and so the same locks, as the reconcile deployment and runs by hand.
            reconciled = reconcile_flow.with_options(task_runner=task_runner())(
                feed_dir=feed_dir, truth=truth, auto_approve_limit=auto_approve_limit
            )
            # Even a stale run's Completed state reaches this caller as its data, a summary.
            assert isinstance(reconciled, dict), reconciled
            summary["reconcile"] = reconciled
            if summary["reconcile"].get("status") == "stale":
                logger.warning("reconciliation stale: %s", summary["reconcile"]["stale"])
        else:
            logger.info("no ERP feed folder given: reconciliation skipped")
        summary["warmup"] = warmup_flow.with_options(task_runner=task_runner())(top=warm_top)
        return {
            step: {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
            for step, result in summary.items()
        }


if __name__ == "__main__":  # pragma: no cover
    nightly_flow()
