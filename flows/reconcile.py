"""The ERP-versus-WMS reconciliation: check the feed whole, load it with COPY, diff it in the
database against the WMS as of the feed's as_of, write adjustment orders (for the ERP, or
applied to the WMS within the auto-approval limit), and tell an admin.

    cangflow run reconcile --erp-file PATH [--truth wms|erp] [--tolerance-abs N]
                           [--tolerance-pct P] [--auto-approve-limit N] [--full-feed]

A rejected feed fails the run, is copied to the quarantine folder with its report, and
changes nothing. The same feed with the same settings is reconciled once; a run killed at any
point is finished by the next run of the same feed.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.console import summary_text
from flows.monitoring import run_metrics
from flows.runners import task_runner
from tasks.reporting import safe_cell
from tasks.quality import run_suite
from tasks.reconcile import (
    apply_approved,
    compare_run,
    export_erp_query,
    finish_run,
    inspect_feed,
    load_and_check,
    load_tolerance_overrides,
    order_warehouses,
    make_orders,
    record_rejection,
    run_summary,
    start_run,
)
from warehouse.errors import InvalidArgument
from warehouse.reconcile import FeedRejected, RunSettings

DISCREPANCY_EVENT = "cangflow.reconciliation.discrepancy"


def _reconcile_flow(erp_file: str | None = None, truth: str = "wms", tolerance_abs: int = 0, tolerance_pct: float = 0.0,
                   auto_approve_limit: int = 0, full_feed: bool = False, tolerances_file: str | None = None,
                   erp_query: str | None = None, max_differing_pct: float | None = None,
                   max_delta_pct: float | None = None) -> dict:
    logger = get_run_logger()
    started = time.perf_counter()
    settings = run_settings(truth, tolerance_abs, tolerance_pct, auto_approve_limit, full_feed, max_differing_pct,
                            max_delta_pct)
    if erp_query:
        erp_file = export_erp_query(erp_query)
    if not erp_file:
        raise InvalidArgument("give the feed: --erp-file PATH, or --erp-query with CANGFLOW_ERP_URL")
    if tolerances_file:
        logger.info("tolerance overrides loaded: %d", load_tolerance_overrides(tolerances_file))
    run_id = None
    try:
        fed = inspect_feed(erp_file)
        run = start_run(fed, settings)
        run_id = run.id
        if run.status == "done":
            figures, _ = run_summary(run.id)
            logger.info("feed %s was reconciled before with these settings (run %d): nothing new", fed.path.name, run.id)
            return {**figures, "already_reconciled": True}
        as_of = run.as_of
        if run.status != "compared":
            rows, as_of = load_and_check(run.id, fed)
            run_suite("erp_feed", run_id=run.id)
            compared = compare_run(run.id, as_of, settings, rows)
            logger.info("compared %d feed rows: %d differences, %d within tolerance", compared.rows_compared,
                        compared.differences, compared.within_tolerance)
    except FeedRejected as rejected:
        quarantined = record_rejection(run_id, erp_file, rejected)
        logger.error("%s; quarantined as %s", rejected, quarantined)
        raise
    made, brake = make_orders(run.id, settings, as_of)
    if brake:
        logger.warning("the run is over the blast-radius brake, so nothing is applied automatically and every line "
                       "waits for a person (cangflow adjustments approve --run %d): %s", run.id, brake)
    logger.info("adjustment orders: %d new order(s), %d line(s), %d published for the ERP; %d open line(s) of earlier "
                "runs superseded, %d difference(s) already sent to the ERP and not acknowledged (not sent again)",
                made.orders, made.lines, made.published, made.superseded, made.already_asked)
    if settings.truth == "erp":
        run_suite("adjustment_orders", run_id=run.id)  # nothing is applied from lines that fail it
        # One task per warehouse's order, mapped: threads here, or workers on other hosts.
        warehouses = order_warehouses(run.id)
        applied = [future.result() for future in apply_approved.map(run.id, warehouses)]
        logger.info("applied to WMS stock, per warehouse: %s", applied)
    figures, largest = finish_run(run.id)
    figures["seconds"] = round(time.perf_counter() - started, 3)
    figures["already_reconciled"] = False
    tell_admin(figures, largest)
    logger.info("summary: %s", summary_text(figures))
    return figures

@flow(name="erp-reconciliation", task_runner=task_runner())
def reconcile_flow(erp_file: str | None = None, truth: str = "wms", tolerance_abs: int = 0, tolerance_pct: float = 0.0,
                   auto_approve_limit: int = 0, full_feed: bool = False, tolerances_file: str | None = None,
                   erp_query: str | None = None, max_differing_pct: float | None = None,
                   max_delta_pct: float | None = None) -> dict:
    """erp-reconciliation: see the module docstring. The run records and pushes its own metrics."""
    with run_metrics("reconcile"):
        return _reconcile_flow(erp_file, truth, tolerance_abs, tolerance_pct, auto_approve_limit, full_feed,
                               tolerances_file, erp_query, max_differing_pct, max_delta_pct)



def run_settings(truth: str, tolerance_abs: int, tolerance_pct: float, auto_approve_limit: int, full_feed: bool,
                 max_differing_pct: float | None = None, max_delta_pct: float | None = None) -> RunSettings:
    if truth not in ("wms", "erp"):
        raise InvalidArgument(f"--truth {truth!r}: say wms (the WMS is right) or erp (the ERP is right)")
    if tolerance_abs < 0 or tolerance_pct < 0 or tolerance_pct > 100 or auto_approve_limit < 0:
        raise InvalidArgument("tolerances and the auto-approve limit must be >= 0 (a percentage at most 100)")
    for name, limit in (("--max-differing-pct", max_differing_pct), ("--max-delta-pct", max_delta_pct)):
        if limit is not None and not 0 <= limit <= 100:
            raise InvalidArgument(f"{name} {limit!r}: must be a percentage from 0 to 100")
    return RunSettings(truth, tolerance_abs, float(tolerance_pct), auto_approve_limit, full_feed,
                       None if max_differing_pct is None else float(max_differing_pct),
                       None if max_delta_pct is None else float(max_delta_pct))


def notice_markdown(figures: dict, largest: list[dict]) -> str:
    lines = [
        f"# ERP reconciliation run {figures['run_id']} ({figures['truth'].upper()} is the truth)",
        "",
        f"Feed `{safe_cell(figures['feed'])}` as of {figures['as_of']}: {figures['feed_rows']:,} rows compared.",
        "",
        "| differences | within tolerance | orders | lines for ERP | applied | pending approval | failed | not in feed (reported) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {figures['differences']} | {figures['within_tolerance']} | {figures['orders']} | {figures['lines_for_erp']} "
        f"| {figures['applied']} | {figures['pending_approval']} | {figures['failed']} | {figures['not_in_feed_reported']} |",
        "",
        "## Largest differences (ERP minus WMS)",
        "",
        "| warehouse | sku | lot | WMS | ERP | delta | kind | within tolerance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in largest:
        cells = [row["warehouse"], row["sku"], row["lot"] or "", row["wms_qty"], row["erp_qty"] if row["erp_qty"] is not None else "",
                 row["delta"], row["kind"], "yes" if row["within_tolerance"] else "no"]
        lines.append("| " + " | ".join(str(safe_cell(str(c))) for c in cells) + " |")
    if figures.get("brake"):
        lines += ["", f"**Brake: nothing was applied automatically.** The run is over the blast-radius brake: "
                      f"{safe_cell(figures['brake'])}. Its {figures.get('held', 0)} line(s) are held: check the feed, then "
                      f"`cangflow adjustments approve --run {figures['run_id']}` or `reject --run {figures['run_id']} --reason ...`."]
    if figures["pending_approval"]:
        lines += ["", f"{figures['pending_approval']} line(s) wait for approval: `cangflow adjustments list` shows them, "
                      "`cangflow adjustments approve ID` or `reject ID --reason ...` decides."]
    return "\n".join(lines)


def tell_admin(figures: dict, largest: list[dict]) -> None:
    """A markdown artifact always; an event an automation can turn into a notification when
    there are differences beyond tolerance; the configured notification block, if any."""
    from prefect.events import emit_event

    from warehouse.settings import get_settings

    body = notice_markdown(figures, largest)
    create_markdown_artifact(markdown=body, key="erp-reconciliation", description="ERP reconciliation notice")
    beyond = figures["differences"] - figures["within_tolerance"]
    if beyond <= 0:
        return
    emit_event(
        event=DISCREPANCY_EVENT,
        resource={"prefect.resource.id": f"cangflow.reconciliation.run.{figures['run_id']}",
                  "prefect.resource.name": f"reconciliation run {figures['run_id']}"},
        payload={key: figures[key] for key in ("run_id", "truth", "as_of", "differences", "within_tolerance",
                                               "orders", "applied", "pending_approval", "failed", "held", "brake")},
    )
    block = get_settings().notify_block
    if block:
        from prefect.blocks.core import Block

        Block.load(block).notify(body=body, subject=f"cangflow: {beyond} stock difference(s) beyond tolerance")
