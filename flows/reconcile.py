"""The ERP-versus-WMS reconciliation: check the feed whole, load it with COPY, diff it in the
database against the WMS as of the feed's as_of, write adjustment orders (for the ERP, or
applied to the WMS within the auto-approval limit), and tell an admin.

    cangflow run reconcile (--erp-file PATH | --feed-dir DIR | --erp-query SQL) [--truth wms|erp]
                           [--tolerance-abs N] [--tolerance-pct P] [--auto-approve-limit N]
                           [--full-feed] [--max-feed-age-hours H] [--confirm-feed-shape]

A rejected feed fails the run, is copied to the quarantine folder with its report, and
changes nothing. A feed that is too old, was reconciled before, or is missing from the feed
folder ends the run as Stale (exit code 4, an event, a metric). One run of a feed, and of a
warehouse, at a time (`warehouse.reconcile.exclusive`); a run killed at any point is finished
by the next run of the same feed.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed

from flows.console import summary_text
from flows.monitoring import run_metrics
from flows.runners import task_runner
from tasks import reporting
from tasks.database import database
from tasks.quality import run_suite
from tasks.reconcile import (
    apply_approved,
    check_feed_quality,
    clean_up,
    compare_run,
    count_waiting_lines,
    export_erp_query,
    finish_run,
    inspect_feed,
    load_and_check,
    load_tolerance_overrides,
    make_orders,
    order_warehouses,
    read_run,
    record_rejection,
    start_run,
)
from warehouse.errors import InvalidArgument
from warehouse.metrics import sinks as metrics
from warehouse.reconcile import FeedRejected, RunSettings
from warehouse.reconcile.exclusive import reconciling
from warehouse.reconcile.feed import new_attempt, staging_table
from warehouse.reconcile.freshness import Stale, newest_feed, no_feed, reconciled_before
from warehouse.reconcile.runs import Difference, Figures
from warehouse.settings import get_settings

DISCREPANCY_EVENT = "cangflow.reconciliation.discrepancy"
STALE_EVENT = "cangflow.reconciliation.stale"


def _reconcile_flow(
    erp_file: str | None = None,
    truth: str = "wms",
    tolerance_abs: int = 0,
    tolerance_pct: float = 0.0,
    auto_approve_limit: int = 0,
    full_feed: bool = False,
    tolerances_file: str | None = None,
    erp_query: str | None = None,
    max_differing_pct: float | None = None,
    max_delta_pct: float | None = None,
    feed_dir: str | None = None,
    max_feed_age_hours: float | None = None,
    confirm_feed_shape: bool = False,
) -> dict[str, Any] | State:
    logger = get_run_logger()
    started = time.perf_counter()
    settings = run_settings(
        truth,
        tolerance_abs,
        tolerance_pct,
        auto_approve_limit,
        full_feed,
        max_differing_pct,
        max_delta_pct,
    )
    if sum(given is not None for given in (erp_file, erp_query, feed_dir)) != 1:
        raise InvalidArgument(
            "give the feed, one way: --erp-file PATH, --feed-dir DIR (its newest *.csv), "
            "or --erp-query with CANGFLOW_ERP_URL"
        )
    if max_feed_age_hours is not None and max_feed_age_hours <= 0:
        raise InvalidArgument(f"--max-feed-age-hours {max_feed_age_hours!r}: must be more than 0")
    source = feed_dir or ("query" if erp_query else "file")
    if feed_dir:
        newest = newest_feed(Path(feed_dir))
        if newest is None:
            return report_stale(no_feed(Path(feed_dir)), source)
        erp_file = str(newest)
        logger.info("the newest feed in %s is %s", feed_dir, newest.name)
    if erp_query:
        erp_file = export_erp_query(erp_query)
    if tolerances_file:
        logger.info("tolerance overrides loaded: %d", load_tolerance_overrides(tolerances_file))
    configured = get_settings()
    max_age = (
        max_feed_age_hours
        if max_feed_age_hours is not None
        else configured.reconcile_max_feed_age_hours
    )
    run_id = None  # set once this run holds its feed's lock: its staging tables are then its own
    assert erp_file is not None  # given, or found or exported above
    with reconciling(database(), wait_seconds=configured.reconcile_wait_seconds) as hold:
        try:
            fed = inspect_feed(erp_file)
            run = start_run(fed, settings)
            hold.run(run.id, run.key)  # a second run of this feed waits here for the first
            run_id = run.id
            swept = hold.sweep()
            if swept:
                logger.info("dropped staging tables killed runs left: %s", ", ".join(swept))
            run = read_run(run.id)
            if run.status == "done":
                return report_stale(
                    Stale(
                        reconciled_before(fed.path.name, run.id), fed.path.name, run.as_of, run.id
                    ),
                    source,
                )
            as_of, warehouses = run.as_of, run.warehouse_ids
            if run.status != "compared":
                loaded = load_and_check(run.id, fed, staging_table(run.id, new_attempt()), max_age)
                if loaded.stale:
                    return report_stale(
                        Stale(loaded.stale, fed.path.name, loaded.as_of, run.id), source
                    )
                as_of, warehouses = loaded.as_of, loaded.warehouse_ids
                hold.warehouses(warehouses)
                check_feed_quality(
                    run.id, fed.path.name, loaded, settings.full_feed, confirm_feed_shape
                )
                compared = compare_run(run.id, loaded, settings)
                logger.info(
                    "compared %d feed rows: %d differences, %d within tolerance",
                    compared.rows_compared,
                    compared.differences,
                    compared.within_tolerance,
                )
            else:
                hold.warehouses(warehouses)
        except FeedRejected as rejected:
            quarantined = record_rejection(run_id, erp_file, rejected)
            logger.error("%s; quarantined as %s", rejected, quarantined)
            raise
        finally:
            if run_id is not None:
                clean_up(run_id)
        assert as_of is not None  # a compared run has its feed's as_of
        figures, largest = _order_and_apply(run.id, settings, as_of)
    summary = reporting.reconcile_summary(figures, time.perf_counter() - started)
    record_fresh(figures, source)
    count_waiting_lines()
    tell_admin(figures, largest)
    logger.info("summary: %s", summary_text(summary))
    return summary


def _order_and_apply(
    run_id: int, settings: RunSettings, as_of: datetime
) -> tuple[Figures, list[Difference]]:
    logger = get_run_logger()
    made, brake = make_orders(run_id, settings, as_of)
    if brake.engaged:
        doing = "applied" if settings.truth == "erp" else "sent to the ERP"
        logger.warning(
            "the run is over the blast-radius brake, so nothing is %s automatically and every line waits "
            "for a person (cangflow adjustments approve --run %d): %s",
            doing,
            run_id,
            brake,
        )
    logger.info(
        "adjustment orders: %d new order(s), %d line(s), %d published for the ERP; %d open line(s) of earlier "
        "runs superseded, %d difference(s) already sent to the ERP and not acknowledged (not sent again)",
        made.orders,
        made.lines,
        made.published,
        made.superseded,
        made.already_asked,
    )
    # The lines against the brake, before any is applied (nothing is applied from lines that fail it).
    run_suite(
        "adjustment_orders",
        run_id=run_id,
        truth=settings.truth,
        braked=brake.engaged,
        max_lines=brake.max_lines,
    )
    if settings.truth == "erp":
        # One task per warehouse's order, mapped: threads here, or workers on other hosts.
        warehouses = order_warehouses(run_id)
        applied = [future.result() for future in apply_approved.map(run_id, warehouses)]
        logger.info("applied to WMS stock: %s", "; ".join(str(a) for a in applied))
    return finish_run(run_id)


@flow(name="erp-reconciliation", task_runner=task_runner(), timeout_seconds=2 * 3600)
def reconcile_flow(
    erp_file: str | None = None,
    truth: str = "wms",
    tolerance_abs: int = 0,
    tolerance_pct: float = 0.0,
    auto_approve_limit: int = 0,
    full_feed: bool = False,
    tolerances_file: str | None = None,
    erp_query: str | None = None,
    max_differing_pct: float | None = None,
    max_delta_pct: float | None = None,
    feed_dir: str | None = None,
    max_feed_age_hours: float | None = None,
    confirm_feed_shape: bool = False,
) -> dict[str, Any] | State:
    """erp-reconciliation: see the module docstring. The run records and pushes its own metrics.

    Returns the run's summary. A stale run returns a Completed state named Stale, which Prefect
    makes the run's final state and hands a caller as that state's data: its summary."""
    with run_metrics("reconcile") as run:
        outcome = _reconcile_flow(
            erp_file,
            truth,
            tolerance_abs,
            tolerance_pct,
            auto_approve_limit,
            full_feed,
            tolerances_file,
            erp_query,
            max_differing_pct,
            max_delta_pct,
            feed_dir,
            max_feed_age_hours,
            confirm_feed_shape,
        )
        # A stale run compared none.
        run.items = outcome.get("feed_rows", 0) if isinstance(outcome, dict) else 0
        return outcome


def report_stale(stale: Stale, source: str) -> State:
    """A run that found no new feed: it ends Completed, named Stale (its own state in the UI,
    exit code 4 from the command), with an event an automation can turn into a notification,
    a markdown artifact, and the stale gauge the alert rules watch."""
    from prefect.events import emit_event

    logger = get_run_logger()
    logger.warning("stale: %s", stale.reason)
    figures = reporting.stale_summary(stale)
    metrics.current().set("cangflow_reconciliation_feed_stale", 1, source=source)
    count_waiting_lines()  # lines keep waiting on a night without a feed: the alert on their age still sees them
    emit_event(
        event=STALE_EVENT,
        resource={
            "prefect.resource.id": f"cangflow.reconciliation.feed.{stale.feed or 'none'}",
            "prefect.resource.name": f"ERP feed {stale.feed or '(none)'}",
        },
        payload={**figures, "source": source},
    )
    reporting.stale_notice(stale)
    return Completed(message=f"stale: {stale.reason}", name="Stale", data=figures)


def record_fresh(figures: Figures, source: str) -> None:
    """A feed was reconciled: the stale gauge clears and the feed's as_of is recorded."""
    sink = metrics.current()
    sink.set("cangflow_reconciliation_feed_stale", 0, source=source)
    if figures.as_of:
        sink.set(
            "cangflow_reconciliation_feed_as_of_timestamp_seconds",
            datetime.fromisoformat(figures.as_of).timestamp(),
            source=source,
        )


def run_settings(
    truth: str,
    tolerance_abs: int,
    tolerance_pct: float,
    auto_approve_limit: int,
    full_feed: bool,
    max_differing_pct: float | None = None,
    max_delta_pct: float | None = None,
) -> RunSettings:
    if truth not in ("wms", "erp"):
        raise InvalidArgument(
            f"--truth {truth!r}: say wms (the WMS is right) or erp (the ERP is right)"
        )
    if tolerance_abs < 0 or tolerance_pct < 0 or tolerance_pct > 100 or auto_approve_limit < 0:
        raise InvalidArgument(
            "tolerances and the auto-approve limit must be >= 0 (a percentage at most 100)"
        )
    for name, limit in (
        ("--max-differing-pct", max_differing_pct),
        ("--max-delta-pct", max_delta_pct),
    ):
        if limit is not None and not 0 <= limit <= 100:
            raise InvalidArgument(f"{name} {limit!r}: must be a percentage from 0 to 100")
    return RunSettings(
        truth,
        tolerance_abs,
        float(tolerance_pct),
        auto_approve_limit,
        full_feed,
        None if max_differing_pct is None else float(max_differing_pct),
        None if max_delta_pct is None else float(max_delta_pct),
    )


def tell_admin(figures: Figures, largest: list[Difference]) -> None:
    """A markdown artifact always; an event an automation can turn into a notification when
    there are differences beyond tolerance; the configured notification block, if any."""
    from prefect.events import emit_event

    from warehouse.settings import get_settings

    body = reporting.reconcile_notice(figures, largest)
    beyond = figures.beyond_tolerance
    if beyond <= 0:
        return
    emit_event(
        event=DISCREPANCY_EVENT,
        resource={
            "prefect.resource.id": f"cangflow.reconciliation.run.{figures.run_id}",
            "prefect.resource.name": f"reconciliation run {figures.run_id}",
        },
        payload=reporting.discrepancy_payload(figures),
    )
    block = get_settings().notify_block
    if block:
        from prefect.blocks.core import Block

        # The block's class is known only once loaded; its `notify` is sync-compatible, so
        # called from this synchronous code it sends before returning.
        notifier: Any = Block.load(block)
        notifier.notify(
            body=body, subject=f"cangflow: {beyond} stock difference(s) beyond tolerance"
        )
