"""The `cangflow` command: what an engineer runs by hand. Every command exits with a code of
`flows.console.ExitCode` and says why on one line of stderr; `--debug` adds the traceback."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flows.console import (
    CommandFailed,
    ExitCode,
    bad_argument,
    error_line,
    fail,
    report,
    summary_lines,
)

if TYPE_CHECKING:  # the command imports the domain lazily, so `--help` stays fast
    from warehouse.db.roles import Role

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# The ephemeral Prefect server of a run by hand needs longer than the 20 s default here.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

app = typer.Typer(
    help="cangflow: batch jobs that keep warehouse stock trustworthy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database: migrations and the embedded server.", no_args_is_help=True)
catalog_app = typer.Typer(
    help="Master data: warehouses, locations, SKUs, lots.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
run_app = typer.Typer(
    help="Run a flow now, by hand (the schedules run the same flows).", no_args_is_help=True
)
history_app = typer.Typer(
    help="Closed history: months of the ledger that refuse changes.", no_args_is_help=True
)
app.add_typer(run_app, name="run")
app.add_typer(history_app, name="history")
adjustments_app = typer.Typer(
    help="Adjustment orders from ERP reconciliation: list, approve, reject.", no_args_is_help=True
)
app.add_typer(adjustments_app, name="adjustments")
server_app = typer.Typer(
    help="A local Prefect server (and worker) that keeps the run history.", no_args_is_help=True
)
app.add_typer(server_app, name="server")
metrics_app = typer.Typer(
    help="Prometheus metrics of the processes that do the work.", no_args_is_help=True
)
app.add_typer(metrics_app, name="metrics")

DEBUG = {"on": os.environ.get("CANGFLOW_DEBUG", "") not in ("", "0", "false")}


@app.callback()
def options(
    debug: bool = typer.Option(
        False, "--debug", help="Show tracebacks and library logs of failures"
    ),
) -> None:
    """cangflow: batch jobs that keep warehouse stock trustworthy."""
    DEBUG["on"] = DEBUG["on"] or debug
    _use_local_prefect_server()


def _home() -> Path:
    from warehouse.settings import get_settings

    return get_settings().home


def _use_local_prefect_server() -> None:
    """Record runs on this home's local Prefect server when it runs and no other is named.
    Done before Prefect is imported: it reads PREFECT_API_URL when it loads its settings."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from flows import local_server

    state = local_server.running(_home())
    if state:
        os.environ["PREFECT_API_URL"] = state.api_url
        auth = local_server.auth_string()
        if auth and not os.environ.get("PREFECT_API_AUTH_STRING"):
            os.environ["PREFECT_API_AUTH_STRING"] = auth


def _database(role: Role | None = "app", *, migrated: bool = True):
    """The configured database, acting as `role` (each command takes the least role that can do
    its job: README "Security"); with `migrated`, refuse one that `db upgrade` has not reached."""
    import warehouse
    from warehouse.db import schema
    from warehouse.errors import SchemaNotCurrent

    try:
        db = warehouse.connect(role=role)
        if migrated:
            schema.require_current(db)
        return db
    except SchemaNotCurrent as error:
        fail(str(error), ExitCode.CANNOT_RUN)
    except ValueError as error:  # a URL of the wrong kind
        fail(f"CANGFLOW_DATABASE_URL: {error}", ExitCode.BAD_ARGUMENTS)
    except Exception as error:  # a connection problem is the user's to fix: say what and where
        fail(f"cannot open the database: {error_line(error)}", ExitCode.CANNOT_RUN)


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="Alembic revision to upgrade to"),
) -> None:
    """Bring the database to the current schema (and premake ledger partitions)."""
    from warehouse.db import schema
    from warehouse.settings import get_settings

    db = _database("owner", migrated=False)
    current = schema.upgrade(db, revision, premake_months=get_settings().premake_months)
    typer.echo(
        f"database {db.url.render_as_string(hide_password=True)} at revision {current}, as role {db.acting_role()}"
    )


@db_app.command("roles")
def db_roles(
    admin_url: str = typer.Option(
        None,
        "--admin-url",
        envvar="CANGFLOW_ADMIN_DATABASE_URL",
        show_default=False,
        help="A superuser (or CREATEROLE owner) of the database; default CANGFLOW_DATABASE_URL",
    ),
) -> None:
    """Make the owner, app and reader roles and convert the database to them (idempotent): the
    owner owns everything, the app may move stock but never change or remove the ledger, the
    reader may only read. Passwords come from the roles' URLs (settings or Secret blocks)."""
    from tasks.database import role_passwords
    from warehouse.db import roles
    from warehouse.db.engine import resolve_url

    url = admin_url or resolve_url(role=None)
    names = roles.RoleNames.from_settings()
    try:
        conversion = roles.convert_database(url, names, role_passwords(names))
    except Exception as error:
        fail(f"cannot convert the database: {error_line(error)}", ExitCode.CANNOT_RUN)
    assert conversion is not None  # always converts when not told `unless_converted`
    for line in conversion.lines():
        typer.echo(line)
    typer.echo(
        f"owner {names.owner} runs `db upgrade` and the rollover; app {names.app} moves stock and runs the "
        f"flows; reader {names.reader} reads (README, Security)"
    )


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL and Redis under CANGFLOW_HOME (those that run)."""
    from warehouse.db.embedded import stop_postgres, stop_redis

    stopped = stop_postgres(_home())
    typer.echo("embedded PostgreSQL stopped" if stopped else "no embedded PostgreSQL runs here")
    if stop_redis(_home()):
        typer.echo("embedded Redis stopped")


@app.command()
def check(
    limit: int = typer.Option(100, help="Violations shown per invariant"),
    incremental: bool = typer.Option(
        False,
        "--incremental",
        help="Only what changed since the last passing check "
        "(the nightly's gate); the default is the full check",
    ),
) -> None:
    """Check the books in full (every snapshot day, the whole ledger); exit 1 when anything is wrong.
    Wrong snapshot days are marked for a rebuild by the next snapshot run."""
    from warehouse.stock import books

    db = _database()
    with db.session() as session:
        result = books.check_books(session, full=not incremental, limit_per_check=limit)
    for line in result.lines():
        typer.echo(line)
    typer.echo(result.summary())
    if not result.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


@app.command()
def demo(
    skus: int = typer.Option(5000, min=10, help="SKUs in the sample"),
    bins: int = typer.Option(300, min=5, help="Bins per warehouse"),
    days: int = typer.Option(90, min=1, max=365, help="Days of movement history"),
    workers: int = typer.Option(
        16, min=1, max=64, help="Concurrent workers in the deduction burst"
    ),
) -> None:
    """Migrate, load a realistic sample, run a burst of concurrent deductions, check invariants."""
    from flows.console import quiet_console_logs
    from flows.demo import run_demo

    # The demo migrates first (as the owner), then works as the app role.
    db = _database(migrated=False)
    owner = _database("owner", migrated=False)
    quiet_console_logs(debug=DEBUG["on"])
    violations = run_demo(
        db,
        owner=owner,
        skus=skus,
        bins_per_warehouse=bins,
        days=days,
        burst_workers=workers,
        echo=typer.echo,
    )
    if violations:
        fail(f"{violations} invariant violation(s) after the demo")


@catalog_app.command("import")
def catalog_import(
    kind: str = typer.Argument(..., help="warehouses | locations | skus | lots"),
    path: str = typer.Argument(..., help="The CSV file"),
) -> None:
    """Import master data from a CSV file; the whole file is checked before anything is written."""
    from warehouse.catalog import csv_import as importer
    from warehouse.errors import WarehouseError

    if kind not in importer.COLUMNS:
        bad_argument("KIND", kind, f"say one of {', '.join(importer.COLUMNS)}")
    _readable_file("FILE", Path(path))
    db = _database()
    try:
        with db.session() as session:
            imported = importer.import_csv(session, kind, Path(path))
    except WarehouseError as error:
        fail(str(error), ExitCode.CHECK_FAILED)
    typer.echo(
        f"{kind}: {imported.rows:,} row(s) read, {imported.created:,} created, "
        f"{imported.existing:,} already present"
    )


def _day(value: str | None, option: str):
    from datetime import date

    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        bad_argument(option, value, "is not a date (YYYY-MM-DD)")


def _one_feed_source(erp_file: str | None, feed_dir: str | None, erp_query: str | None) -> None:
    """Exactly one way to the feed, or exit 2."""
    given = [
        option
        for option, value in (
            ("--erp-file", erp_file),
            ("--feed-dir", feed_dir),
            ("--erp-query", erp_query),
        )
        if value is not None
    ]
    if not given:
        fail(
            "give --erp-file PATH, --feed-dir DIR, or --erp-query with --erp-url",
            ExitCode.BAD_ARGUMENTS,
        )
    if len(given) > 1:
        fail(f"give one of {', '.join(given)}, not several", ExitCode.BAD_ARGUMENTS)


def _tolerance_file(path: str) -> None:
    """A tolerance file that can be read and reads whole, or exit 2 naming what is wrong (the
    file, or each bad row, column and value)."""
    from warehouse.reconcile import tolerances
    from warehouse.reconcile.feed import FeedRejected

    _readable_file("--tolerances", Path(path))
    try:
        tolerances.read_tolerances(Path(path))
    except FeedRejected as error:
        fail(f"--tolerances {path!r}: {error}", ExitCode.BAD_ARGUMENTS)


def _erp_database(erp_url: str | None) -> None:
    """--erp-query needs a PostgreSQL URL of the ERP (--erp-url, else CANGFLOW_ERP_URL): exit
    2 when there is none or it is of another kind (its password never shown)."""
    from warehouse.reconcile.feed import erp_dsn
    from warehouse.settings import get_settings

    configured = get_settings().erp_url
    url = erp_url or (configured.get_secret_value() if configured is not None else None)
    if not url:
        fail(
            "--erp-query needs --erp-url (or CANGFLOW_ERP_URL) to name the ERP database",
            ExitCode.BAD_ARGUMENTS,
        )
    try:
        erp_dsn(url)
    except ValueError as error:
        fail(f"{'--erp-url' if erp_url else 'CANGFLOW_ERP_URL'}: {error}", ExitCode.BAD_ARGUMENTS)


def _readable_file(option: str, path: Path | None) -> None:
    """A file the command can read, or exit 2 naming the option and the path."""
    if path is None:
        return
    if not path.exists():
        bad_argument(option, str(path), "no such file")
    if path.is_dir():
        bad_argument(option, str(path), "is a directory, not a file")
    try:
        with open(path, "rb") as probe:
            probe.read(1)
    except OSError as error:
        bad_argument(option, str(path), f"cannot be read ({error.strerror or error})")


def _temporary_api_deaf_to_ctrl_c() -> None:
    """With no server to record runs on, start the temporary API now, with SIGINT blocked (its
    process inherits the mask). A terminal's Ctrl-C goes to the whole process group: it killed
    the temporary API under a following relay, whose last report then retried for more than a
    minute, and the command hung. The API still stops with this process (SIGTERM)."""
    if os.environ.get("PREFECT_API_URL"):
        return
    import signal

    from prefect.client.orchestration import get_client

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with get_client(sync_client=True) as client:
            client.api_healthcheck()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _run_flow(flow, **parameters):
    """Run a flow in this process, print its summary as a table and where the run is recorded.
    A failure propagates to `main`, which maps it to its exit code."""
    from flows.console import quiet_console_logs
    from flows.runs import run_flow

    _database()  # a missing or unmigrated database is a clear error before Prefect starts
    quiet_console_logs(debug=DEBUG["on"])
    summary, run = run_flow(flow, **parameters)
    shown = {
        **summary,
        "run": f"{run.name} ({run.state})",
        "recorded at": run.url
        or "a temporary Prefect server "
        "(gone with this command; `cangflow server start` keeps runs)",
    }
    for line in summary_lines(shown):
        typer.echo(line)
    return summary


@run_app.command("snapshot")
def run_snapshot(
    day: str = typer.Option(
        None,
        "--date",
        help="Build exactly this day (YYYY-MM-DD, a business day: "
        "midnight to midnight in CANGFLOW_BUSINESS_TIMEZONE)",
    ),
    start: str = typer.Option(None, "--from", help="Backfill from this business day"),
    end: str = typer.Option(None, "--to", help="Backfill up to this business day"),
) -> None:
    """Daily stock snapshots: dirty days, then up to yesterday; or a date or range you name."""
    from flows.snapshot import snapshot_flow
    from warehouse.errors import WarehouseError
    from warehouse.snapshots.plan import requested_days

    asked = {"day": _day(day, "--date"), "start": _day(start, "--from"), "end": _day(end, "--to")}
    try:
        requested_days(**asked)  # bad dates are refused before a flow run starts
    except WarehouseError as error:
        fail(str(error), ExitCode.BAD_ARGUMENTS)
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
    metrics_port: int = typer.Option(
        None, "--metrics-port", help="With --follow: serve /metrics on this port"
    ),
) -> None:
    """Publish the outbox to Redis Streams and invalidate the cache for every stock change."""
    from flows.relay import relay_flow

    typer.echo("outbox relay:" + (" following, Ctrl-C stops" if follow else ""))
    if follow:
        _temporary_api_deaf_to_ctrl_c()
    try:
        _run_flow(relay_flow, follow=follow, metrics_port=metrics_port)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop took over
        typer.echo("relay stopped")


@run_app.command("warmup")
def run_warmup(
    top: int = typer.Option(1000, "--top", min=1, max=1_000_000, help="How many hot SKUs to warm"),
) -> None:
    """Write the hot set of (warehouse, SKU) stock numbers to Redis ahead of readers."""
    from flows.cache_warmup import warmup_flow

    typer.echo("cache warmup:")
    _run_flow(warmup_flow, top=top)


@run_app.command("reconcile")
def run_reconcile(
    erp_file: str = typer.Option(
        None, "--erp-file", help="The ERP feed: CSV warehouse,sku,lot,quantity,as_of"
    ),
    feed_dir: str = typer.Option(
        None,
        "--feed-dir",
        help="Reconcile the newest *.csv in this folder (stale when none is new)",
    ),
    truth: str = typer.Option(
        "wms", "--truth", help="wms: adjustment orders for the ERP; erp: adjust WMS stock"
    ),
    tolerance_abs: int = typer.Option(
        0, "--tolerance-abs", help="Differences up to this many units are recorded only"
    ),
    tolerance_pct: float = typer.Option(
        0.0, "--tolerance-pct", help="... or up to this % of the WMS stock"
    ),
    auto_approve_limit: int = typer.Option(
        0, "--auto-approve-limit", help="ERP truth: apply lines up to this |delta|"
    ),
    full_feed: bool = typer.Option(
        False, "--full-feed", help="The feed is complete: SKUs absent from it are adjusted too"
    ),
    tolerances: str = typer.Option(None, "--tolerances", help="CSV sku,category,abs,pct"),
    erp_url: str = typer.Option(
        None, "--erp-url", help="Read the feed from this ERP database (or CANGFLOW_ERP_URL)"
    ),
    erp_query: str = typer.Option(
        None, "--erp-query", help="SQL returning warehouse,sku,lot,quantity,as_of"
    ),
    max_differing_pct: float = typer.Option(
        None,
        "--max-differing-pct",
        help="Brake: hold the run if more than this % of feed rows differ",
    ),
    max_delta_pct: float = typer.Option(
        None, "--max-delta-pct", help="Brake: hold the run if the deltas exceed this % of the stock"
    ),
    max_feed_age_hours: float = typer.Option(
        None,
        "--max-feed-age-hours",
        help="A feed older than this is stale (default CANGFLOW_RECONCILE_MAX_FEED_AGE_HOURS, 26)",
    ),
    confirm_feed_shape: bool = typer.Option(
        False,
        "--confirm-feed-shape",
        help="Accept a feed far smaller, or with far more zeros or other quantities, "
        "than the previous one of its warehouses",
    ),
) -> None:
    """Compare the ERP's book stock with the WMS and raise adjustment orders. Exit code 4: no
    new feed (stale)."""
    _one_feed_source(erp_file, feed_dir, erp_query)
    if max_feed_age_hours is not None and max_feed_age_hours <= 0:
        bad_argument("--max-feed-age-hours", max_feed_age_hours, "must be more than 0")
    if truth not in ("wms", "erp"):
        bad_argument("--truth", truth, "say wms (the WMS is right) or erp (the ERP is right)")
    for option, value in (
        ("--tolerance-abs", tolerance_abs),
        ("--auto-approve-limit", auto_approve_limit),
    ):
        if value < 0:
            bad_argument(option, value, "must be 0 or more")
    for option, percent in (
        ("--tolerance-pct", tolerance_pct),
        ("--max-differing-pct", max_differing_pct),
        ("--max-delta-pct", max_delta_pct),
    ):
        if percent is not None and not 0 <= percent <= 100:
            bad_argument(option, percent, "must be a percentage from 0 to 100")
    _readable_file("--erp-file", Path(erp_file) if erp_file else None)
    if feed_dir is not None and not Path(feed_dir).is_dir():
        bad_argument("--feed-dir", feed_dir, "is not a folder")
    if tolerances:
        _tolerance_file(tolerances)
    if erp_query is not None:
        _erp_database(erp_url)
    from flows.reconcile import reconcile_flow

    if erp_url:
        os.environ["CANGFLOW_ERP_URL"] = erp_url  # kept out of the flow's parameters and logs
        from warehouse.settings import get_settings

        get_settings.cache_clear()
    typer.echo("ERP reconciliation:")
    summary = _run_flow(
        reconcile_flow,
        erp_file=erp_file,
        truth=truth,
        tolerance_abs=tolerance_abs,
        tolerance_pct=tolerance_pct,
        auto_approve_limit=auto_approve_limit,
        full_feed=full_feed,
        tolerances_file=tolerances,
        erp_query=erp_query,
        max_differing_pct=max_differing_pct,
        max_delta_pct=max_delta_pct,
        feed_dir=feed_dir,
        max_feed_age_hours=max_feed_age_hours,
        confirm_feed_shape=confirm_feed_shape,
    )
    if summary.get("status") == "stale":
        fail(f"stale: {summary['stale']}", ExitCode.STALE)


@adjustments_app.command("list")
def adjustments_list(
    all_lines: bool = typer.Option(False, "--all", help="Every line, not only the open ones"),
) -> None:
    """Open adjustment order lines (waiting for approval, or sent to the ERP and not yet
    acknowledged), or all of them, with the run, feed and as_of each came from."""
    from warehouse.reconcile import listing

    db = _database("reader")
    with db.session() as session:
        rows = listing.lines(session, all_lines=all_lines)
    typer.echo(
        f"{'id':>8} {'run':>6} {'feed':<20} {'as_of':<20} {'age':>6} {'warehouse':<12} {'sku':<16} {'lot':<10} "
        f"{'wms':>9} {'erp':>9} {'delta':>9}  status"
    )
    for r in rows:
        age = (
            f"{r.age.days}d"
            if r.age is not None and r.age.days
            else (f"{int(r.age.total_seconds() // 3600)}h" if r.age else "")
        )
        status = r.status + (f" by run {r.superseded_by_run}" if r.superseded_by_run else "")
        as_of = f"{r.as_of:%Y-%m-%d %H:%M:%S}" if r.as_of else ""
        typer.echo(
            f"{r.id:>8} {r.run_id:>6} {r.feed_name[:20]:<20} {as_of:<19} {age:>6} {r.warehouse:<12} "
            f"{r.sku:<16} {r.lot or '':<10} {r.wms_qty:>9} {'' if r.erp_qty is None else r.erp_qty:>9} {r.delta:>9}  {status}"
        )
    typer.echo(f"{len(rows)} line(s)")


@adjustments_app.command("ack")
def adjustments_ack(
    line_ids: list[int] = typer.Argument(..., help="Lines the ERP confirmed"),
) -> None:
    """Close lines sent to the ERP (WMS truth) that it confirmed; a difference found again
    later is then sent again. Each line in its own transaction, as approve and reject decide
    theirs; exits 1 when any line was refused."""
    import getpass

    from warehouse.errors import WarehouseError
    from warehouse.reconcile import orders

    db = _database()
    refused = 0
    for line_id in line_ids:
        try:
            with db.session() as session:
                status = orders.acknowledge(session, line_id, by=getpass.getuser())
        except WarehouseError as error:
            status, refused = f"refused: {error}", refused + 1
        typer.echo(f"line {line_id}: {status}")
    if refused:
        fail(f"{refused} of {len(line_ids)} line(s) not acknowledged", ExitCode.CHECK_FAILED)


def _decide(line_ids: list[int], run: int | None, approve: bool, reason: str | None) -> None:
    """Each line in its own transaction: one refused line does not hold back the others, and a
    line decided twice is applied once. Exits 1 when any line was refused or failed."""
    import getpass

    from warehouse.errors import WarehouseError
    from warehouse.reconcile import orders
    from warehouse.settings import get_settings

    db = _database()
    who = getpass.getuser()
    ids = list(line_ids or [])
    if run is not None:
        with db.session() as session:
            ids += orders.waiting_lines(session, run)
    if not ids:
        fail(
            "no line to decide: give line ids, or --run N with lines waiting for approval",
            ExitCode.BAD_ARGUMENTS,
        )
    problems = 0
    for line_id in ids:
        try:
            with db.session() as session:
                settled = orders.settle(
                    session,
                    line_id,
                    approve=approve,
                    by=who,
                    note=reason,
                    reconcile_location=get_settings().reconcile_location,
                )
            status = settled.status + (f": {settled.reason}" if settled.reason else "")
            if settled.status == "for_erp":
                status = "sent to the ERP (for_erp)"
        except WarehouseError as error:
            status, problems = f"refused: {error}", problems + 1
        if status.startswith("failed"):
            problems += 1
        typer.echo(f"line {line_id}: {status}")
    if problems:
        fail(
            f"{problems} of {len(ids)} line(s) not decided as asked (see above)",
            ExitCode.CHECK_FAILED,
        )


@adjustments_app.command("approve")
def adjustments_approve(
    line_ids: list[int] = typer.Argument(None, help="Adjustment order line ids"),
    run: int = typer.Option(None, "--run", help="Every line of this run waiting for approval"),
) -> None:
    """Approve waiting lines: an ERP-truth line is applied to WMS stock at once, a WMS-truth line
    (held by the brake) is sent to the ERP; once, however often approved."""
    _decide(line_ids, run, True, None)


@adjustments_app.command("reject")
def adjustments_reject(
    line_ids: list[int] = typer.Argument(None, help="Adjustment order line ids"),
    reason: str = typer.Option(..., "--reason"),
    run: int = typer.Option(None, "--run", help="Every line of this run waiting for approval"),
) -> None:
    """Reject pending lines: WMS stock stays as it is."""
    if not reason.strip():
        bad_argument("--reason", reason, "say why: it goes on each line and its audit trail")
    _decide(line_ids, run, False, reason)


@adjustments_app.command("show")
def adjustments_show(line_id: int = typer.Argument(...)) -> None:
    """One line: where it came from, what it asks, what was decided and applied."""
    from warehouse.reconcile import listing

    db = _database("reader")
    with db.session() as session:
        row = listing.line(session, line_id)
    if row is None:
        fail(f"no adjustment order line {line_id}", ExitCode.CHECK_FAILED)
    for key, value in row.items():
        if value is not None:
            typer.echo(f"{key:>18}: {value}")


@history_app.command("reopen")
def history_reopen(
    month: str = typer.Argument(..., help="YYYY-MM"),
    reason: str = typer.Option(..., "--reason", help="Why, for the audit trail"),
) -> None:
    """Reopen one closed month on purpose (audited); the next rollover closes it again."""
    from warehouse.errors import InvalidArgument, WarehouseError
    from warehouse.history import closing as history
    from warehouse.settings import get_settings

    try:
        first_day = history.parse_month(month)
    except InvalidArgument:
        bad_argument("MONTH", month, "is not a month (YYYY-MM)")
    if not reason.strip():
        bad_argument("--reason", reason, "say why: it goes on the audit trail")
    db = _database("owner")
    try:
        with db.session() as session:
            opened = history.reopen_month(
                session,
                first_day,
                reason=reason,
                lock_timeout_ms=get_settings().ddl_lock_timeout_ms,
            )
    except WarehouseError as error:
        fail(str(error), ExitCode.CHECK_FAILED)
    typer.echo(f"history {month} reopened ({', '.join(opened)}); the next rollover closes it again")


@history_app.command("status")
def history_status() -> None:
    """Closed months, and the audit trail of openings and closings."""
    from warehouse.history import closing as history

    db = _database("reader")
    with db.session() as session:
        closed = history.closed_months(session)
        audit = history.audit_trail(session, limit=20)
    typer.echo("closed months: " + (", ".join(f"{m:%Y-%m}" for m in closed) or "none"))
    for row in audit:
        typer.echo(
            f"  {row.at:%Y-%m-%d %H:%M} {row.month:%Y-%m} {row.action:<9} {row.actor}: {row.reason or ''}"
        )


@server_app.command("start")
def server_start(
    port: int = typer.Option(
        None, "--port", help="Port of the API and UI (default CANGFLOW_SERVER_PORT, 4200)"
    ),
    host: str = typer.Option(
        None, "--host", help="Address to listen on (default CANGFLOW_SERVER_HOST, 127.0.0.1)"
    ),
    worker: bool = typer.Option(
        True, "--worker/--no-worker", help="Also run a process worker for the deployments"
    ),
) -> None:
    """Start a Prefect server with its database under CANGFLOW_HOME, and a process worker;
    `cangflow run ...` and `cangflow demo` then record their runs there."""
    from flows import local_server
    from warehouse.settings import get_settings

    settings = get_settings()
    port = settings.server_port if port is None else port
    if not 1 <= port <= 65535:
        bad_argument("--port", port, "must be a TCP port from 1 to 65535")
    host = host or settings.server_host
    if not local_server.loopback(host) and not local_server.auth_string():
        bad_argument(
            "--host",
            host,
            "exposes the API and UI beyond this machine: set CANGFLOW_SERVER_AUTH "
            "(user:password) and put the server behind your own access control",
        )
    try:
        state, started = local_server.start(
            _home(), host=host, port=port, worker=worker, progress=typer.echo
        )
    except local_server.ServerError as error:
        fail(str(error), ExitCode.CANNOT_RUN)
    typer.echo(
        ("Prefect server started" if started else "Prefect server already running")
        + f": {state.ui_url}"
    )
    typer.echo(f"  API     {state.api_url}")
    typer.echo(f"  worker  {'pool ' + local_server.WORK_POOL if state.worker_pid else 'none'}")
    typer.echo(
        "  `cangflow run ...` and `cangflow demo` record their runs there; `cangflow server stop` stops it"
    )


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server and its worker (the run history stays under CANGFLOW_HOME)."""
    from flows import local_server

    stopped = local_server.stop(_home())
    typer.echo("Prefect server stopped" if stopped else "no local Prefect server runs here")


@server_app.command("status")
def server_status() -> None:
    """Whether the local Prefect server runs, and where; exit 1 when it does not."""
    from flows import local_server

    state = local_server.running(_home())
    if state is None:
        typer.echo(
            f"no local Prefect server runs for {_home().resolve()} (start one: cangflow server start)"
        )
        raise typer.Exit(ExitCode.CHECK_FAILED)
    typer.echo(f"Prefect server running: {state.ui_url} (pid {state.server_pid})")
    typer.echo(f"  worker  {f'pid {state.worker_pid}' if state.worker_pid else 'none'}")


@metrics_app.command("serve")
def metrics_serve(
    port: int = typer.Option(9464, "--port", min=1, max=65535, help="Serve /metrics on this port"),
    host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on"),
) -> None:
    """Serve the library metrics (deductions, cache reads, slow statements, outbox) of this
    process or, with PROMETHEUS_MULTIPROC_DIR set, of every process writing there: for WMS
    processes that have no /metrics endpoint of their own. Runs until stopped (Ctrl-C)."""
    import time

    from prometheus_client import start_http_server

    from warehouse.metrics import sinks as metrics

    try:
        start_http_server(port, addr=host, registry=metrics.serve_registry())
    except OSError as error:
        fail(f"cannot listen on {host}:{port}: {error.strerror or error}", ExitCode.CANNOT_RUN)
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    typer.echo(
        f"serving http://{host}:{port}/metrics"
        + (f" for the processes writing to {folder}" if folder else "")
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("stopped")


def exit_code_of(error: BaseException) -> ExitCode:
    """What a failure that reached the top means for the caller (see ExitCode)."""
    from warehouse.errors import InvalidArgument, SchemaNotCurrent, WarehouseError

    if isinstance(error, CommandFailed):
        return error.code
    if isinstance(error, InvalidArgument):
        return ExitCode.BAD_ARGUMENTS
    if isinstance(error, SchemaNotCurrent):
        return ExitCode.CANNOT_RUN
    from warehouse.reconcile.exclusive import AlreadyRunning

    if isinstance(error, AlreadyRunning):  # not the input's fault: run it again later
        return ExitCode.CANNOT_RUN
    if isinstance(error, WarehouseError):  # a refused feed, a failed check, a refused request
        return ExitCode.CHECK_FAILED
    return ExitCode.CANNOT_RUN


def main(arguments: list[str] | None = None) -> int:
    """The console entry point: run the command, turn any failure into one line and an exit code."""
    try:
        code = app(args=arguments, standalone_mode=False, prog_name="cangflow")
    except CommandFailed as error:
        # The failure the command turned into a reason.
        if DEBUG["on"] and error.__context__ is not None:
            traceback.print_exception(error.__context__)
        report(str(error))
        return int(error.code)
    except (typer.Abort, KeyboardInterrupt):
        report("interrupted")
        return 130
    except typer.TyperException as error:  # the command line itself: unknown option, bad value
        ctx = getattr(error, "ctx", None)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        if message.strip():  # empty after the help was shown for a bare group
            report(f"{error_line(Exception(message))}{where}")
        return int(ExitCode.BAD_ARGUMENTS)
    except Exception as error:
        if DEBUG["on"]:
            traceback.print_exc()
        code = exit_code_of(error)
        prefix = (
            ""
            if code != ExitCode.CANNOT_RUN or isinstance(error, CommandFailed)
            else f"{type(error).__name__}: "
        )
        report(prefix + error_line(error))
        return int(code)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
