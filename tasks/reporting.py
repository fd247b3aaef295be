"""What a run tells people, in one place: each flow's summary (the flow's return value, which
the `cangflow` command prints and the nightly collects) and the artifacts a person acts on in
the Prefect UI, with stable keys so the UI shows their history. Cells that a spreadsheet would
run as a formula are neutralised.

The tasks return the domain's dataclasses; this module turns them into plain summaries (JSON
for Prefect's records and the command) and artifacts. Nothing here decides anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from warehouse.cache.invalidator import Invalidated
from warehouse.cache.stats import HitRates
from warehouse.cache.warmup import Warmed
from warehouse.history.closing import Closing
from warehouse.history.partitions import MonthMade
from warehouse.history.retention import Retired, describe
from warehouse.outbox import Pruned, PublishRound
from warehouse.quality.suites import QualityResult
from warehouse.reconcile.freshness import Stale
from warehouse.reconcile.runs import Difference, Figures
from warehouse.snapshots import DayOutcome, SnapshotPlan
from warehouse.stock.books import BooksCheck

_FORMULA_START = ("=", "+", "-", "@")
RECONCILIATION_NOTICE = "erp-reconciliation"


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def table_artifact(key: str, rows: list[dict[str, Any]], description: str) -> None:
    table = [{column: safe_cell(value) for column, value in row.items()} for row in rows]
    create_table_artifact(
        table=table or [{"note": "nothing to report"}], key=key, description=description
    )


# --- snapshot --------------------------------------------------------------------------------


def latest_check_text(latest: Any, *, ran: bool) -> str:
    """The latest snapshot's check (a `snapshots.CheckResult`, or None when there is none)."""
    if not ran:
        return "not run"
    return "no snapshot yet" if latest is None else str(latest)


def snapshot_summary(
    plan: SnapshotPlan, days: Sequence[DayOutcome], latest: str, seconds: float, *, ok: bool
) -> dict[str, Any]:
    return {
        "days_built": sum(1 for d in days if d.built),
        "days_skipped": sum(1 for d in days if d.mode == "skipped"),
        "rows": sum(d.rows for d in days),
        "dirty_rebuilt": [str(d) for d in plan.dirty],
        "newly_dirty": [str(d) for d in plan.newly_marked],
        "latest_check": latest,
        "seconds": round(seconds, 3),
        "ok": ok,
    }


def snapshot_artifact(
    plan: SnapshotPlan, days: Sequence[DayOutcome], summary: dict[str, Any]
) -> None:
    table_artifact(
        "snapshot-run",
        [
            {
                "date": str(d.day),
                "mode": d.mode,
                "rows": d.rows,
                "seconds": d.seconds,
                "dirty rebuilt": d.day in plan.dirty,
                "check": d.check,
            }
            for d in days
        ],
        f"Snapshot run: {summary['days_built']} day(s) built, {summary['rows']:,} rows, "
        f"{len(plan.dirty)} dirty day(s) rebuilt, {summary['seconds']} s. "
        f"Latest check: {summary['latest_check']}",
    )


# --- partition rollover ----------------------------------------------------------------------


def rollover_summary(
    made: Sequence[MonthMade],
    moved: Sequence[MonthMade],
    closings: Sequence[Closing],
    retired: Sequence[Retired],
    keys_pruned: int,
    seconds: float,
) -> dict[str, Any]:
    return {
        "partitions_created": [m.name for m in [*made, *moved] if m.created],
        "rows_moved_from_default": sum(m.rows_moved for m in [*made, *moved]),
        "months_closed": [c.label for c in closings if c.closed],
        "months_left_open": {c.label: c.why for c in closings if not c.closed},
        "partitions_retired": [r.name for r in retired],
        "idempotency_keys_pruned": keys_pruned,
        "seconds": round(seconds, 3),
    }


def rollover_artifact(
    made: Sequence[MonthMade],
    moved: Sequence[MonthMade],
    closings: Sequence[Closing],
    retired: Sequence[Retired],
    summary: dict[str, Any],
) -> None:
    rows = (
        [
            {
                "step": "premake",
                "partition": m.name,
                "result": "created",
                "rows moved": m.rows_moved,
            }
            for m in made
            if m.created
        ]
        + [
            {
                "step": "default rows",
                "partition": m.name,
                "result": "moved out of default",
                "rows moved": m.rows_moved,
            }
            for m in moved
        ]
        + [
            {
                "step": "close",
                "partition": c.label,
                "result": "closed" if c.closed else f"open: {c.why}",
                "rows moved": 0,
            }
            for c in closings
        ]
        + [
            {"step": "retention", "partition": r.name, "result": describe(r), "rows moved": 0}
            for r in retired
        ]
    )
    table_artifact(
        "partition-rollover",
        rows,
        f"Rollover: {len(summary['partitions_created'])} partition(s) created, "
        f"{summary['rows_moved_from_default']} row(s) moved out of default, "
        f"{len(summary['months_closed'])} month(s) closed, "
        f"{len(summary['partitions_retired'])} partition(s) retired, {summary['seconds']} s",
    )


# --- cache warmup and outbox relay -----------------------------------------------------------


def warmup_summary(
    source: str, parts: Sequence[Warmed], rates: HitRates, seconds: float
) -> dict[str, Any]:
    return {
        "source": source,
        "keys": sum(p.keys for p in parts),
        "written": sum(p.written for p in parts),
        "refused_stale": sum(p.refused_stale for p in parts),
        "warehouses": len(parts),
        "hit_rate_previous_hour": rates.previous_hour,
        "hit_rate_this_hour": rates.this_hour,
        "seconds": round(seconds, 3),
    }


def warmup_artifact(summary: dict[str, Any]) -> None:
    table_artifact(
        "cache-warmup",
        [summary],
        f"Warmup: {summary['keys']} keys from {summary['source']} in {summary['seconds']} s",
    )


def relay_summary(
    published: PublishRound, invalidated: Invalidated, pruned: Pruned, seconds: float
) -> dict[str, Any]:
    return {
        **asdict(published),
        **asdict(invalidated),
        **asdict(pruned),
        "seconds": round(seconds, 3),
    }


def relay_artifact(summary: dict[str, Any]) -> None:
    table_artifact(
        "outbox-relay",
        [summary],
        f"Relay: {summary['published']} published, "
        f"{summary['handled']} handled by the cache consumer",
    )


# --- quality ---------------------------------------------------------------------------------


def quality_artifact(result: QualityResult) -> None:
    table_artifact(
        f"quality-{result.suite.replace('_', '-')}",
        [
            {**row, "arguments": str(row["arguments"]), "sample": str(row["sample"])}
            for row in result.rows
        ],
        str(result)[:2000],
    )


def books_summary(result: BooksCheck) -> dict[str, Any]:
    return {"kind": result.kind, "ok": result.ok, "summary": result.summary()}


# --- reconciliation --------------------------------------------------------------------------


def reconcile_summary(figures: Figures, seconds: float) -> dict[str, Any]:
    return {**asdict(figures), "seconds": round(seconds, 3)}


def stale_summary(stale: Stale) -> dict[str, Any]:
    return {
        "status": "stale",
        "stale": stale.reason,
        "run_id": stale.run_id,
        "feed": stale.feed,
        "as_of": stale.as_of.isoformat() if stale.as_of else None,
    }


def stale_notice(stale: Stale) -> None:
    create_markdown_artifact(
        markdown=f"# ERP reconciliation: stale feed\n\n{safe_cell(stale.reason)}\n\n"
        "Nothing was compared or changed.",
        key=RECONCILIATION_NOTICE,
        description="ERP reconciliation notice",
    )


def reconcile_notice(figures: Figures, largest: Sequence[Difference]) -> str:
    """The notice an admin reads (the artifact, and the body of the notification)."""
    markdown = notice_markdown(figures, largest)
    create_markdown_artifact(
        markdown=markdown, key=RECONCILIATION_NOTICE, description="ERP reconciliation notice"
    )
    return markdown


def notice_markdown(f: Figures, largest: Sequence[Difference]) -> str:
    lines = [
        f"# ERP reconciliation run {f.run_id} ({f.truth.upper()} is the truth)",
        "",
        f"Feed `{safe_cell(f.feed)}` as of {f.as_of}: {f.feed_rows:,} rows compared.",
        "",
        (
            "| differences | within tolerance | orders | lines for ERP | applied | pending approval "
            "| failed | not in feed (reported) |"
        ),
        "|---|---|---|---|---|---|---|---|",
        (
            f"| {f.differences} | {f.within_tolerance} | {f.orders} | {f.lines_for_erp} "
            f"| {f.applied} | {f.pending_approval} | {f.failed} | {f.not_in_feed_reported} |"
        ),
        "",
        "## Largest differences (ERP minus WMS)",
        "",
        "| warehouse | sku | lot | WMS | ERP | delta | kind | within tolerance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in largest:
        cells = [
            row.warehouse,
            row.sku,
            row.lot or "",
            row.wms_qty,
            row.erp_qty if row.erp_qty is not None else "",
            row.delta,
            row.kind,
            "yes" if row.within_tolerance else "no",
        ]
        lines.append("| " + " | ".join(str(safe_cell(str(c))) for c in cells) + " |")
    if f.brake:
        lines += [
            "",
            (
                f"**Brake: nothing was applied automatically.** The run is over the blast-radius "
                f"brake: {safe_cell(f.brake)}. Its {f.held} line(s) are held: check the feed, then "
                f"`cangflow adjustments approve --run {f.run_id}` or "
                f"`reject --run {f.run_id} --reason ...`."
            ),
        ]
    if f.pending_approval:
        lines += [
            "",
            (
                f"{f.pending_approval} line(s) wait for approval: `cangflow adjustments list` shows "
                "them, `cangflow adjustments approve ID` or `reject ID --reason ...` decides."
            ),
        ]
    return "\n".join(lines)


DISCREPANCY_PAYLOAD = (
    "run_id",
    "truth",
    "as_of",
    "differences",
    "within_tolerance",
    "orders",
    "applied",
    "pending_approval",
    "failed",
    "held",
    "brake",
)


def discrepancy_payload(figures: Figures) -> dict[str, Any]:
    """The discrepancy event's payload: what an automation's notification template may use."""
    whole = asdict(figures)
    return {key: whole[key] for key in DISCREPANCY_PAYLOAD}
