"""The nightly parent flow: snapshot (with its chain check) -> books check (incremental, or
full when one is due: `warehouse.books`) -> partition
rollover -> reconciliation (when a feed is waiting) -> cache warmup, as subflows. A failed
check or gate stops every later step that would apply data and fails the run, visibly.

    prefect deployment run nightly/nightly     (or: python -m flows.nightly)
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.cache_warmup import warmup_flow
from flows.monitoring import run_metrics
from flows.partition_rollover import rollover_flow
from flows.reconcile import reconcile_flow
from flows.runners import task_runner
from flows.snapshot import snapshot_flow
from tasks.quality import check_books


def newest_feed(feed_dir: str | None) -> str | None:
    """The most recent *.csv in the feed folder (a feed reconciled before is recognised and skipped)."""
    if not feed_dir:
        return None
    folder = Path(feed_dir)
    feeds = sorted(folder.glob("*.csv"), key=lambda path: path.stat().st_mtime) if folder.is_dir() else []
    return str(feeds[-1]) if feeds else None


@flow(name="nightly")
def nightly_flow(feed_dir: str | None = None, truth: str = "wms", auto_approve_limit: int = 0, warm_top: int = 1000) -> dict:
    with run_metrics("nightly"):
        logger = get_run_logger()
        summary = {"snapshot": snapshot_flow()}
        summary["books"] = check_books()  # the gate: nothing below runs on books that do not add up
        summary["rollover"] = rollover_flow()
        feed = newest_feed(feed_dir)
        if feed:
            summary["reconcile"] = reconcile_flow.with_options(task_runner=task_runner())(
                erp_file=feed, truth=truth, auto_approve_limit=auto_approve_limit)
        else:
            logger.info("no ERP feed in %s: reconciliation skipped", feed_dir or "(no feed folder given)")
        summary["warmup"] = warmup_flow.with_options(task_runner=task_runner())(top=warm_top)
        return {step: {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
                for step, result in summary.items()}


if __name__ == "__main__":  # pragma: no cover
    nightly_flow()
