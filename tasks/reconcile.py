"""Tasks of the reconciliation flow: each one transaction (or one per line) over one
warehouse.reconcile function. A rejected feed is a result the flow reports, not a retry."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from prefect import task

from tasks.database import database
from warehouse.errors import InvalidArgument, WarehouseError
from warehouse.metrics import sinks as metrics
from warehouse.quality.suites import QualityResult
from warehouse.reconcile import (
    brake,
    checks,
    compare,
    feed,
    freshness,
    orders,
    profile,
    runs,
    tolerances,
)
from warehouse.settings import get_settings


@task(name="reconcile-inspect-feed")
def inspect_feed(path: str) -> feed.FeedFile:
    return feed.inspect(Path(path), max_bytes=get_settings().feed_max_bytes)


def _not_refused(task, task_run, state) -> bool:
    """Retry what may pass next time (a dropped connection), never a refusal of the input."""
    return not isinstance(state.data, WarehouseError)


@task(
    name="reconcile-tolerances",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_not_refused,
)
def load_tolerance_overrides(path: str) -> int:
    with database().session() as session:
        return tolerances.load_tolerances(session, Path(path))


@task(name="reconcile-start", retries=2, retry_delay_seconds=5)
def start_run(fed: feed.FeedFile, settings: runs.RunSettings) -> runs.Run:
    with database().session() as session:
        return runs.start(
            session, feed_name=fed.path.name, feed_sha256=fed.sha256, settings=settings
        )


@task(name="reconcile-read-run")
def read_run(run_id: int) -> runs.Run:
    with database().session() as session:
        return runs.read(session, run_id)


@task(name="reconcile-load-and-check")
def load_and_check(
    run_id: int, fed: feed.FeedFile, staging: str, max_age_hours: float
) -> runs.Loaded:
    """COPY the feed into this attempt's staging table and check every row (raises
    FeedRejected with the problems); measure its shape; a feed too old ends the run as stale."""
    with database().session() as session:
        rows = feed.load(session, staging, fed)
        problems, total, as_of = checks.check_rows(session, run_id, staging, rows)
        if problems:
            raise feed.FeedRejected(fed.path.name, problems, total)
        assert as_of is not None  # a feed without problems has its one as_of
        shape = profile.measure(session, staging)
        # Checked again under the warehouses' locks (`check_feed_quality`); here it refuses early.
        older = checks.older_than_reconciled(session, run_id, as_of, list(shape.warehouse_ids))
        if older is not None:
            raise feed.FeedRejected(fed.path.name, [older])
        profile.record(session, run_id, shape)
        stale = freshness.too_old(as_of, max_age_hours)
        if stale:
            runs.mark(session, run_id, "stale", feed_rows=rows, as_of=as_of, error=stale)
        else:
            runs.mark(session, run_id, "loading", feed_rows=rows, as_of=as_of, error=None)
    return runs.Loaded(staging, rows, as_of, shape.warehouse_ids, stale)


@task(name="reconcile-feed-quality")
def check_feed_quality(
    run_id: int, feed_name: str, loaded: runs.Loaded, full_feed: bool, confirmed: bool
) -> QualityResult:
    """Run under the warehouses' locks: the feed is still not older than any feed reconciled for
    its warehouses (one may have finished while this run waited), and the `erp_feed` suite over
    the feed's shape as the load step measured it holds, against the bounds the previous feed of its scope sets (none when the
    operator confirmed the shape); either failure rejects the feed, naming why. Not retried:
    the same rows give the same answer."""
    from tasks.quality import validated

    with database().session() as session:
        older = checks.older_than_reconciled(
            session, run_id, loaded.as_of, list(loaded.warehouse_ids)
        )
        if older is not None:
            raise feed.FeedRejected(feed_name, [older])
        limits = profile.bounds(
            session, run_id, loaded.warehouse_ids, full_feed=full_feed, confirmed=confirmed
        )
    context = {"run_id": run_id, **(limits.as_context() if limits else {})}
    result = validated("erp_feed", **context)
    if not result.success:
        reasons = [
            feed.Problem(
                None,
                None,
                None,
                failure.get("why")
                or f"{failure['expectation']} failed (observed {failure['unexpected']})",
            )
            for failure in result.failures
        ]
        if limits is not None:
            reasons.append(
                feed.Problem(
                    None,
                    None,
                    None,
                    "if the feed changed on purpose, rerun with --confirm-feed-shape",
                )
            )
        raise feed.FeedRejected(feed_name, reasons)
    return result


@task(name="reconcile-reject")
def record_rejection(run_id: int | None, path: str, rejected: feed.FeedRejected) -> str:
    metrics.current().set("cangflow_reconciliation_last_rejected_timestamp_seconds", time.time())
    target = runs.quarantine(Path(path), rejected, get_settings().quarantine_path)
    if run_id is not None:
        with database().session() as session:
            runs.mark(session, run_id, "rejected", error=str(rejected)[:2000])
    return str(target)


@task(name="reconcile-clean-up", retries=2, retry_delay_seconds=5)
def clean_up(run_id: int) -> list[str]:
    """Drop the run's staging tables (this attempt's, and any a killed attempt left)."""
    with database().session() as session:
        return runs.forget_staging(session, run_id)


@task(name="reconcile-compare", retries=2, retry_delay_seconds=5)
def compare_run(run_id: int, loaded: runs.Loaded, settings: runs.RunSettings) -> compare.Compared:
    with database().session() as session:
        done = compare.compare(
            session,
            run_id,
            loaded.staging,
            as_of=loaded.as_of,
            tolerance_abs=settings.tolerance_abs,
            tolerance_pct=settings.tolerance_pct,
            feed_rows=loaded.rows,
            warehouse_ids=list(loaded.warehouse_ids),
        )
        runs.mark(
            session,
            run_id,
            "compared",
            compared=done.rows_compared,
            differences=done.differences,
            within_tolerance=done.within_tolerance,
        )
    metrics.current().set("cangflow_reconciliation_last_rows_compared", done.rows_compared)
    metrics.current().set("cangflow_reconciliation_last_differences", done.differences)
    return done


@task(name="reconcile-orders", retries=2, retry_delay_seconds=5)
def make_orders(
    run_id: int, settings: runs.RunSettings, as_of: datetime
) -> tuple[orders.Made, brake.Brake]:
    """The run's lines, held for a person when the run is over the blast-radius brake."""
    with database().session() as session:
        stop = brake.check(session, run_id, settings)
        made = orders.make_orders(
            session,
            run_id,
            truth=settings.truth,
            auto_approve_limit=settings.auto_approve_limit,
            full_feed=settings.full_feed,
            as_of=as_of,
            held=stop.engaged,
        )
    return made, stop


@task(name="reconcile-warehouses")
def order_warehouses(run_id: int) -> list[int]:
    with database().session() as session:
        return orders.order_warehouses(session, run_id)


# Mapped into the task runner's threads, so its own timeout does not meet the flow's (README,
# "Timeouts"); an hour for one warehouse's approved lines is far beyond a healthy run.
@task(
    name="reconcile-apply",
    task_run_name="reconcile-apply-{warehouse_id}",
    retries=2,
    retry_delay_seconds=5,
    timeout_seconds=3600,
)
def apply_approved(run_id: int, warehouse_id: int | None = None) -> orders.AppliedLines:
    """ERP truth: each approved line of one warehouse's order (or all) applied in its own
    transaction (keyed: a rerun replays)."""
    return orders.apply_approved(
        database(),
        run_id,
        warehouse_id,
        reconcile_location=get_settings().reconcile_location,
        by="reconciliation (auto-approved)",
    )


@task(name="reconcile-finish", retries=2, retry_delay_seconds=5)
def finish_run(run_id: int) -> tuple[runs.Figures, list[runs.Difference]]:
    with database().session() as session:
        figures = runs.summary(session, run_id)
        runs.mark(
            session, run_id, "done", adjusted=figures.applied, pending=figures.pending_approval
        )
        metrics.current().set("cangflow_reconciliation_last_applied", figures.applied)
        return replace(figures, status="done"), runs.largest(session, run_id)


@task(name="reconcile-waiting-lines")
def count_waiting_lines() -> orders.Waiting:
    """The adjustment lines waiting for a person, for the gauges an alert watches."""
    with database().session() as session:
        waiting = orders.waiting(session)
    metrics.current().set("cangflow_adjustments_waiting_lines", waiting.lines)
    metrics.current().set(
        "cangflow_adjustments_waiting_oldest_age_seconds", waiting.oldest_age_seconds
    )
    return waiting


@task(
    name="reconcile-export-erp",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_not_refused,
)
def export_erp_query(query: str) -> str:
    """Run the ERP query (CANGFLOW_ERP_URL: never a parameter, so it stays out of run records)
    and write its rows as a feed file; the file then goes through every check."""
    settings = get_settings()
    if settings.erp_url is None:  # a setting to fix: refused, not retried
        raise InvalidArgument(
            "--erp-query needs CANGFLOW_ERP_URL (or --erp-url) to name the ERP database"
        )
    target = feed.new_export_file(settings.home / "feeds", datetime.now())
    feed.export_query(settings.erp_url.get_secret_value(), query, target)
    return str(target)
