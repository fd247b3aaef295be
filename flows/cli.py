"""The `cangflow` command: what an engineer runs by hand. Exit 0 on success, non-zero with the
reason on stderr on failure or rejected input."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# The ephemeral Prefect server of a run by hand needs longer than the 20 s default here.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

app = typer.Typer(help="cangflow: batch jobs that keep warehouse stock trustworthy.", no_args_is_help=True)
db_app = typer.Typer(help="The database: migrations and the embedded server.", no_args_is_help=True)
catalog_app = typer.Typer(help="Master data: warehouses, locations, SKUs, lots.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
run_app = typer.Typer(help="Run a flow now, by hand (the schedules run the same flows).", no_args_is_help=True)
history_app = typer.Typer(help="Closed history: months of the ledger that refuse changes.", no_args_is_help=True)
app.add_typer(run_app, name="run")
app.add_typer(history_app, name="history")
adjustments_app = typer.Typer(help="Adjustment orders from ERP reconciliation: list, approve, reject.", no_args_is_help=True)
app.add_typer(adjustments_app, name="adjustments")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _database(*, migrated: bool = True):
    """The configured database; with `migrated`, refuse one that `db upgrade` has not reached."""
    import warehouse
    from warehouse import schema
    from warehouse.errors import SchemaNotCurrent

    try:
        db = warehouse.connect()
        if migrated:
            schema.require_current(db)
        return db
    except SchemaNotCurrent as error:
        fail(str(error))
    except Exception as error:  # a connection problem is the user's to fix: say what and where
        fail(f"cannot open the database: {error}")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision to upgrade to")) -> None:
    """Bring the database to the current schema (and premake ledger partitions)."""
    from warehouse import schema
    from warehouse.settings import get_settings

    db = _database(migrated=False)
    current = schema.upgrade(db, revision, premake_months=get_settings().premake_months)
    typer.echo(f"database {db.url.render_as_string(hide_password=True)} at revision {current}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL under ./.cangflow (if it runs)."""
    from warehouse.embedded import stop_postgres
    from warehouse.settings import get_settings

    stopped = stop_postgres(get_settings().home)
    typer.echo("embedded PostgreSQL stopped" if stopped else "no embedded PostgreSQL here")


@app.command()
def check(limit: int = typer.Option(100, help="Violations shown per invariant")) -> None:
    """Check the stock invariants; exit 1 when any is violated."""
    from warehouse import invariants

    db = _database()
    with db.session() as session:
        violations = invariants.check(session, limit_per_check=limit)
    for violation in violations:
        typer.echo(str(violation))
    typer.echo(f"invariants: {len(violations)} violation(s)")
    if violations:
        raise typer.Exit(1)


@app.command()
def demo(
    skus: int = typer.Option(5000, min=10, help="SKUs in the sample"),
    bins: int = typer.Option(300, min=5, help="Bins per warehouse"),
    days: int = typer.Option(90, min=1, max=365, help="Days of movement history"),
    workers: int = typer.Option(16, min=1, max=64, help="Concurrent workers in the deduction burst"),
) -> None:
    """Migrate, load a realistic sample, run a burst of concurrent deductions, check invariants."""
    from flows.demo import run_demo

    db = _database(migrated=False)  # the demo migrates first
    violations = run_demo(db, skus=skus, bins_per_warehouse=bins, days=days, burst_workers=workers, echo=typer.echo)
    if violations:
        fail(f"{violations} invariant violation(s) after the demo")


@catalog_app.command("import")
def catalog_import(
    kind: str = typer.Argument(..., help="warehouses | locations | skus | lots"),
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
) -> None:
    """Import master data from a CSV file; the whole file is checked before anything is written."""
    from warehouse import catalog_import as importer
    from warehouse.errors import WarehouseError

    db = _database()
    try:
        with db.session() as session:
            report = importer.import_csv(session, kind, path)
    except WarehouseError as error:
        fail(str(error), 2)
    typer.echo(f"{kind}: {report.rows} row(s) read, {report.created} created, {report.existing} already present")


def _day(value: str | None, option: str):
    from datetime import date

    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not a date (YYYY-MM-DD)", 2)


def _run_flow(flow, **parameters):
    """Run a flow in this process and print its summary; exit 1 with the reason when it fails."""
    from warehouse.errors import WarehouseError

    _database()  # a missing or unmigrated database is a clear error before Prefect starts
    try:
        summary = flow(**parameters)
    except WarehouseError as error:
        fail(str(error), 2)
    except Exception as error:
        fail(f"{flow.name} failed: {error}")
    for key, value in summary.items():
        typer.echo(f"  {key:<24} {value}")
    return summary


@run_app.command("snapshot")
def run_snapshot(
    day: str = typer.Option(None, "--date", help="Build exactly this day (YYYY-MM-DD, UTC)"),
    start: str = typer.Option(None, "--from", help="Backfill from this day"),
    end: str = typer.Option(None, "--to", help="Backfill up to this day"),
) -> None:
    """Daily stock snapshots: dirty days, then up to yesterday; or a date or range you name."""
    from flows.snapshot import snapshot_flow
    from warehouse.errors import WarehouseError
    from warehouse.snapshots.plan import requested_days

    asked = dict(day=_day(day, "--date"), start=_day(start, "--from"), end=_day(end, "--to"))
    try:
        requested_days(**asked)  # bad dates are refused before a flow run starts
    except WarehouseError as error:
        fail(str(error), 2)
    typer.echo("snapshot run:")
    _run_flow(snapshot_flow, **asked)


@run_app.command("rollover")
def run_rollover() -> None:
    """Premake partitions, empty the default partitions, close old months, retire older ones."""
    from flows.partition_rollover import rollover_flow

    typer.echo("partition rollover:")
    _run_flow(rollover_flow)


@run_app.command("relay")
def run_relay(
    follow: bool = typer.Option(False, "--follow", help="Keep relaying until stopped (Ctrl-C)"),
    metrics_port: int = typer.Option(None, "--metrics-port", help="With --follow: serve /metrics on this port"),
) -> None:
    """Publish the outbox to Redis Streams and invalidate the cache for every stock change."""
    from flows.relay import relay_flow

    typer.echo("outbox relay:" + (" following, Ctrl-C stops" if follow else ""))
    try:
        _run_flow(relay_flow, follow=follow, metrics_port=metrics_port)
    except KeyboardInterrupt:
        typer.echo("relay stopped")


@run_app.command("warmup")
def run_warmup(top: int = typer.Option(1000, "--top", min=1, max=1_000_000, help="How many hot SKUs to warm")) -> None:
    """Write the hot set of (warehouse, SKU) stock numbers to Redis ahead of readers."""
    from flows.cache_warmup import warmup_flow

    typer.echo("cache warmup:")
    _run_flow(warmup_flow, top=top)


@run_app.command("reconcile")
def run_reconcile(
    erp_file: Path = typer.Option(None, "--erp-file", help="The ERP feed: CSV warehouse,sku,lot,quantity,as_of"),
    truth: str = typer.Option("wms", "--truth", help="wms: adjustment orders for the ERP; erp: adjust WMS stock"),
    tolerance_abs: int = typer.Option(0, "--tolerance-abs", min=0, help="Differences up to this many units are recorded only"),
    tolerance_pct: float = typer.Option(0.0, "--tolerance-pct", min=0, max=100, help="... or up to this % of the WMS stock"),
    auto_approve_limit: int = typer.Option(0, "--auto-approve-limit", min=0, help="ERP truth: apply lines up to this |delta|"),
    full_feed: bool = typer.Option(False, "--full-feed", help="The feed is complete: SKUs absent from it are adjusted too"),
    tolerances: Path = typer.Option(None, "--tolerances", exists=True, dir_okay=False, help="CSV sku,category,abs,pct"),
    erp_url: str = typer.Option(None, "--erp-url", help="Read the feed from this ERP database (or CANGFLOW_ERP_URL)"),
    erp_query: str = typer.Option(None, "--erp-query", help="SQL returning warehouse,sku,lot,quantity,as_of"),
) -> None:
    """Compare the ERP's book stock with the WMS and raise adjustment orders."""
    from flows.reconcile import reconcile_flow

    if erp_file is None and erp_query is None:
        fail("give --erp-file PATH (or --erp-query with --erp-url)", 2)
    if erp_url:
        os.environ["CANGFLOW_ERP_URL"] = erp_url  # kept out of the flow's parameters and logs
        from warehouse.settings import get_settings

        get_settings.cache_clear()
    typer.echo("ERP reconciliation:")
    _run_flow(reconcile_flow, erp_file=str(erp_file) if erp_file else None, truth=truth, tolerance_abs=tolerance_abs,
              tolerance_pct=tolerance_pct, auto_approve_limit=auto_approve_limit, full_feed=full_feed,
              tolerances_file=str(tolerances) if tolerances else None, erp_query=erp_query)


@adjustments_app.command("list")
def adjustments_list(all_lines: bool = typer.Option(False, "--all", help="Every line, not only those waiting")) -> None:
    """Adjustment order lines waiting for approval (or all of them)."""
    from sqlalchemy import text

    db = _database()
    with db.session() as session:
        rows = session.execute(text("""
            SELECT l.id, o.run_id, w.code AS warehouse, s.code AS sku, lot.code AS lot, l.wms_qty, l.erp_qty, l.delta,
                   l.status, l.reason FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
            JOIN warehouse w ON w.id = l.warehouse_id JOIN sku s ON s.id = l.sku_id LEFT JOIN lot ON lot.id = l.lot_id
            WHERE :all OR l.status = 'pending_approval' ORDER BY l.id LIMIT 1000"""), {"all": all_lines}).all()
    typer.echo(f"{'id':>8} {'run':>6} {'warehouse':<12} {'sku':<16} {'lot':<12} {'wms':>10} {'erp':>10} {'delta':>10}  status")
    for r in rows:
        typer.echo(f"{r.id:>8} {r.run_id:>6} {r.warehouse:<12} {r.sku:<16} {r.lot or '':<12} {r.wms_qty:>10} "
                   f"{'' if r.erp_qty is None else r.erp_qty:>10} {r.delta:>10}  {r.status}")
    typer.echo(f"{len(rows)} line(s)")


def _decide(line_id: int, approve: bool, reason: str | None) -> None:
    import getpass

    from warehouse.errors import WarehouseError
    from warehouse.reconcile import orders
    from warehouse.settings import get_settings

    db = _database()
    who = getpass.getuser()
    try:
        with db.session() as session:
            status = orders.decide(session, line_id, approve=approve, by=who, note=reason)
            if approve and status == "approved":
                applied = orders.apply_line(session, line_id, reconcile_location=get_settings().reconcile_location, by=who)
                status = applied.status + (f": {applied.reason}" if applied.reason else "")
    except WarehouseError as error:
        fail(str(error), 2)
    typer.echo(f"line {line_id}: {status}")


@adjustments_app.command("approve")
def adjustments_approve(line_id: int = typer.Argument(..., help="Adjustment order line id")) -> None:
    """Approve a pending line: it is applied to WMS stock at once (once, however often approved)."""
    _decide(line_id, True, None)


@adjustments_app.command("reject")
def adjustments_reject(line_id: int = typer.Argument(...), reason: str = typer.Option(..., "--reason")) -> None:
    """Reject a pending line: WMS stock stays as it is."""
    _decide(line_id, False, reason)


@history_app.command("reopen")
def history_reopen(
    month: str = typer.Argument(..., help="YYYY-MM"),
    reason: str = typer.Option(..., "--reason", help="Why, for the audit trail"),
) -> None:
    """Reopen one closed month on purpose (audited); the next rollover closes it again."""
    from warehouse import history
    from warehouse.errors import WarehouseError
    from warehouse.settings import get_settings

    db = _database()
    try:
        with db.session() as session:
            opened = history.reopen_month(session, history.parse_month(month), reason=reason,
                                          lock_timeout_ms=get_settings().ddl_lock_timeout_ms)
    except WarehouseError as error:
        fail(str(error), 2)
    typer.echo(f"history {month} reopened ({', '.join(opened)}); the next rollover closes it again")


@history_app.command("status")
def history_status() -> None:
    """Closed months, and the audit trail of openings and closings."""
    from sqlalchemy import text

    from warehouse import history

    db = _database()
    with db.session() as session:
        closed = history.closed_months(session)
        audit = session.execute(text("SELECT month, action, reason, actor, at FROM history_audit ORDER BY at DESC LIMIT 20")).all()
    typer.echo("closed months: " + (", ".join(f"{m:%Y-%m}" for m in closed) or "none"))
    for row in audit:
        typer.echo(f"  {row.at:%Y-%m-%d %H:%M} {row.month:%Y-%m} {row.action:<9} {row.actor}: {row.reason or ''}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
