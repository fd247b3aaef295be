"""ERP reconciliation: how close the flow's load and diff get to a raw COPY and a raw FULL JOIN.

    uv run python -m bench.reconcile [--rows 1000000] [--repeats 3] [--explain] [--keep]
                                     [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

It creates its own database (`cangflow_bench_reconcile_<pid>`, dropped at the end unless --keep),
migrates it and loads, set-based, 10 warehouses of one bin each x --rows/10 SKUs, one
stock_balance row per (warehouse, SKU) with on_hand in 1..1000 (no movements: the diff reads the
balance minus the movements after as_of). The ERP feed (`warehouse,sku,lot,quantity,as_of`, lot
empty, one as_of = now, ISO-8601 with zone, rows in balance order) is written to a temp file by
COPY ... TO STDOUT; one balance in 1,000 (id % 1000 = 0) gets a quantity +3 or -1 off.
One run, --repeats times interleaved (medians), each repetition a new reconciliation run:
1. floor load: COPY of the file (feed.CHUNK chunks) into an empty plain table of the 5 text
   columns, + COMMIT. floor_copy_rows_per_s.
2. flow load: what the flow's load steps do, in one transaction: feed.inspect (size, header,
   NUL scan, SHA-256), runs.start, feed.load (COPY into the attempt's table erp_feed_<run>_<tag>),
   checks.check_rows, profile.measure (the feed's shape and warehouses), runs.mark + COMMIT. load_rows_per_s = rows / all of it; the parts are reported apart.
   Then one untimed seq scan of each loaded table: the first reader after a bulk load sets the
   hint bits, and that should land on none of the diffs.
3. floor diff: one hand-written INSERT INTO a scratch table SELECT ... FROM (the feed rows
   typed: codes -> ids, quantity -> bigint) FULL JOIN stock_balance WHERE the quantities differ,
   + COMMIT (so it writes the differences, as the flow does). Rows/s over 2 x rows. The floor
   reads the floor load's table, ANALYZEd after its COPY (untimed; floor_analyze_s); the same
   join over the run's staging rows, which nothing ANALYZEs in the flow, is floor_diff_staging_*.
4. flow diff: compare.compare(...) as the compare step calls it, + COMMIT (diff_s); the step's
   cleanup (runs.forget_staging, a DROP of the staging table) timed apart.
   ratio_diff_to_sql_join = floor seconds / flow seconds (>= 0.8 is the target).
Between repetitions (untimed) the run's rows are deleted and the tables vacuumed.
5. --explain: one more flow load, then EXPLAIN (ANALYZE, BUFFERS) of checks._ROW_PROBLEMS and
   compare._DIFF (rolled back) to stderr.
6. end to end: flows.reconcile.reconcile_flow once on a copy of the file (tolerance_abs 0, a
   new run, with a done run of the same warehouses and shape before it, so the erp_feed suite
   checks the feed's shape as on a real night) under prefect_test_harness; end_to_end_s is the
   flow call (server start excluded),
   its summary must show exactly the changed rows as differences (exit 1 otherwise), and each
   task run's time is reported (Prefect's task run records). ratio_end_to_end_to_sql =
   end_to_end_s / sql_floor_s (floor COPY + floor diff; issue 16's goal: <= 1.5). Issue 16
   measures "from its start to the differences recorded": end_to_end_to_differences_s (the call
   to the compare task's end) and ratio_to_differences_to_sql; end_to_end_s, the whole call
   with the orders and Prefect's end of the run, is the stricter of the two.
7. command line: `cangflow run reconcile --erp-file` in a new process against that running
   Prefect server, on a feed as of now with the same differences: cli_wall_s (its imports and
   Prefect's start-up included, as an engineer waits for it); it must exit 0.
8. peers (after the flow; `uv sync --extra bench`), each from the file to its differences,
   imports excluded, each must find the same number of differences: pandas and polars diff the
   file against the balances COPYed out as CSV; reladiff's join diff runs in the database on
   the file COPYed into a table, against a view of the balances by code.

Progress goes to stderr; the last line of stdout is one JSON object.
"""

import argparse
import importlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

import warehouse
from bench.common import add_database_arguments, bench_database, database_url
from warehouse.db import schema
from warehouse.reconcile import RunSettings, checks, compare, feed, profile, runs

FULL_ROWS, WAREHOUSES, STRIDE = 1_000_000, 10, 1000  # one balance in STRIDE differs
MAX_BYTES = 2 * 1024**3

LOAD = [
    (
        "INSERT INTO warehouse (code, name) SELECT 'RW' || lpad(w::text, 2, '0'), 'reconcile bench' "
        "FROM generate_series(1, %(warehouses)s) w"
    ),
    "INSERT INTO location (warehouse_id, code) SELECT id, 'BIN-1' FROM warehouse",
    "INSERT INTO sku (code) SELECT 'RSKU-' || lpad(s::text, 7, '0') FROM generate_series(1, %(skus)s) s",
    (
        "INSERT INTO stock_balance (warehouse_id, location_id, sku_id, on_hand, version) "
        "SELECT w.id, l.id, s.id, 1 + CAST(floor(random() * 1000) AS bigint), 1 "
        "FROM warehouse w JOIN location l ON l.warehouse_id = w.id CROSS JOIN sku s ORDER BY w.id, s.id"
    ),
    "CREATE TABLE bench_copy (warehouse text, sku text, lot text, quantity text, as_of text)",
    "CREATE TABLE bench_diff (warehouse_id bigint, sku_id bigint, wms_qty bigint, erp_qty bigint, delta bigint)",
]
FEED_OUT = """
COPY (SELECT w.code AS warehouse, s.code AS sku, CAST(NULL AS text) AS lot,
             CASE WHEN b.id % {stride} <> 0 THEN b.on_hand
                  WHEN (b.id / {stride}) % 2 = 0 THEN b.on_hand + 3 ELSE b.on_hand - 1 END AS quantity,
             {as_of} AS as_of
      FROM stock_balance b JOIN warehouse w ON w.id = b.warehouse_id JOIN sku s ON s.id = b.sku_id
      ORDER BY b.id)
TO STDOUT WITH (FORMAT csv, HEADER true)
"""
FLOOR_COPY = (
    "COPY bench_copy (warehouse, sku, lot, quantity, as_of) FROM STDIN "
    "WITH (FORMAT csv, HEADER true, ENCODING 'UTF8')"
)
# The least a diff can cost: the feed typed, one FULL JOIN, the differences written. {feed} is
# the floor's own (ANALYZEd) copy of the file, or the run's staging rows as the flow reads them.
FLOOR_DIFF = """
INSERT INTO bench_diff (warehouse_id, sku_id, wms_qty, erp_qty, delta)
SELECT coalesce(f.warehouse_id, b.warehouse_id), coalesce(f.sku_id, b.sku_id), coalesce(b.on_hand, 0), f.qty,
       coalesce(f.qty, 0) - coalesce(b.on_hand, 0)
FROM (SELECT w.id AS warehouse_id, s.id AS sku_id, CAST(r.quantity AS bigint) AS qty
      FROM {feed} JOIN warehouse w ON w.code = r.warehouse JOIN sku s ON s.code = r.sku) AS f
FULL JOIN stock_balance b ON b.warehouse_id = f.warehouse_id AND b.sku_id = f.sku_id
WHERE coalesce(f.qty, 0) <> coalesce(b.on_hand, 0)
"""
FLOOR_FEED = {"floor": "bench_copy r", "staging": '"{staging}" r'}


def log(message: str) -> None:
    print(f"[bench.reconcile] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def setup(conn: psycopg.Connection, skus: int, path: Path) -> tuple[int, int]:
    """Master data and balances, then the feed file; (rows, rows changed)."""
    started = time.perf_counter()
    with conn.transaction():
        for statement in LOAD:
            conn.execute(statement, {"warehouses": WAREHOUSES, "skus": skus})
    conn.execute("VACUUM (ANALYZE)")
    as_of = write_feed(conn, path)
    rows, changed = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE id %% %s = 0) FROM stock_balance", (STRIDE,)
    ).fetchone()
    log(
        f"setup: {rows:,} balances, feed {path.stat().st_size:,} bytes as of {as_of}, {changed} changed, "
        f"{time.perf_counter() - started:.1f} s"
    )
    return rows, changed


def write_feed(conn: psycopg.Connection, path: Path) -> str:
    """The ERP feed of the balances as of now (one in STRIDE off), by COPY TO STDOUT; its as_of."""
    as_of = datetime.now(UTC).isoformat(timespec="microseconds")
    statement = sql.SQL(FEED_OUT).format(stride=sql.Literal(STRIDE), as_of=sql.Literal(as_of))
    with conn.cursor() as cursor, cursor.copy(statement) as copy, path.open("wb") as out:
        for chunk in copy:
            out.write(chunk)
    return as_of


def copy_file(cursor: psycopg.Cursor, statement: str, path: Path) -> int:
    """The file sent through `statement` (a COPY ... FROM STDIN) in the flow's chunks; its rows."""
    with cursor.copy(statement) as copy, path.open("rb") as stream:
        while chunk := stream.read(feed.CHUNK):
            copy.write(chunk)
    return cursor.rowcount


def floor_load(conn: psycopg.Connection, path: Path) -> tuple[float, int]:
    conn.execute("TRUNCATE bench_copy")
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cursor:
        rows = copy_file(cursor, FLOOR_COPY, path)
    return time.perf_counter() - started, rows


def flow_load(db: warehouse.Database, path: Path, settings: RunSettings) -> dict:
    """The load steps of the flow (inspect, start, load_and_check) in one transaction."""
    t0 = time.perf_counter()
    fed = feed.inspect(path, max_bytes=MAX_BYTES)
    t1 = time.perf_counter()
    with db.session() as s:
        run = runs.start(s, feed_name=path.name, feed_sha256=fed.sha256, settings=settings)
        t2 = time.perf_counter()
        staging = feed.staging_table(run.id, feed.new_attempt())
        rows = feed.load(s, staging, fed)
        t3 = time.perf_counter()
        problems, total, as_of = checks.check_rows(s, run.id, staging, rows)
        t4 = time.perf_counter()
        if problems:
            raise SystemExit(f"the bench feed was rejected: {total} problem(s), e.g. {problems[0]}")
        shape = profile.measure(s, staging)
        profile.record(s, run.id, shape)
        t5 = time.perf_counter()
        runs.mark(s, run.id, "loading", feed_rows=rows, as_of=as_of)
    t6 = time.perf_counter()
    return {
        "run": run.id,
        "staging": staging,
        "warehouses": list(shape.warehouse_ids),
        "rows": rows,
        "as_of": as_of,
        "total": t6 - t0,
        "inspect": t1 - t0,
        "start": t2 - t1,
        "copy": t3 - t2,
        "checks": t4 - t3,
        "profile": t5 - t4,
        "mark_commit": t6 - t5,
    }


def floor_diff(conn: psycopg.Connection, staging: str, feed_rows: str) -> tuple[float, int]:
    conn.execute("TRUNCATE bench_diff")
    started = time.perf_counter()
    with conn.transaction():
        rows = conn.execute(
            FLOOR_DIFF.format(feed=FLOOR_FEED[feed_rows].format(staging=staging))
        ).rowcount
    return time.perf_counter() - started, rows


def flow_diff(
    db: warehouse.Database, loaded: dict, settings: RunSettings
) -> tuple[float, float, compare.Compared]:
    """compare.compare as the compare step calls it (+ commit); then the step's staging DELETE."""
    started = time.perf_counter()
    with db.session() as s:
        done = compare.compare(
            s,
            loaded["run"],
            loaded["staging"],
            as_of=loaded["as_of"],
            tolerance_abs=settings.tolerance_abs,
            tolerance_pct=settings.tolerance_pct,
            feed_rows=loaded["rows"],
            warehouse_ids=loaded["warehouses"],
        )
    compared = time.perf_counter()
    with db.session() as s:
        runs.forget_staging(s, loaded["run"])
    return compared - started, time.perf_counter() - compared, done


def forget_run(conn: psycopg.Connection, run_id: int, staging: str) -> None:
    """Untimed: the next repetition starts from empty staging and difference tables."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(staging)))
        conn.execute("DELETE FROM reconciliation_difference WHERE run_id = %s", (run_id,))
        conn.execute("DELETE FROM reconciliation_run WHERE id = %s", (run_id,))
    conn.execute("VACUUM reconciliation_difference, reconciliation_run")


def repetitions(conn, db, path: Path, rows: int, changed: int, repeats: int) -> dict:
    took: dict[str, list[float]] = {}

    def keep(**seconds: float) -> None:
        for name, value in seconds.items():
            took.setdefault(name, []).append(value)

    for rep in range(repeats):
        settings = RunSettings(
            tolerance_abs=rep + 1
        )  # a new run key each time (the runs are deleted too)
        copy_s, copied = floor_load(conn, path)
        started = time.perf_counter()
        conn.execute("ANALYZE bench_copy")
        analyze_s = time.perf_counter() - started
        loaded = flow_load(db, path, settings)
        for table in ("bench_copy", loaded["staging"]):  # hint bits, see the docstring
            conn.execute(sql.SQL("SELECT count(quantity) FROM {}").format(sql.Identifier(table)))
        floor_s, floor_rows = floor_diff(conn, loaded["staging"], "floor")
        staging_s, staging_rows = floor_diff(conn, loaded["staging"], "staging")
        diff_s, forget_s, done = flow_diff(db, loaded, settings)
        if (
            not copied == loaded["rows"] == rows
            or not floor_rows == staging_rows == done.differences == changed
        ):
            raise SystemExit(
                f"rows: COPY {copied}, flow {loaded['rows']}, expected {rows}; differences: floor "
                f"{floor_rows}, over staging {staging_rows}, flow {done.differences}, expected {changed}"
            )
        keep(
            floor_copy=copy_s,
            load=loaded["total"],
            inspect=loaded["inspect"],
            start=loaded["start"],
            copy=loaded["copy"],
            checks=loaded["checks"],
            profile=loaded["profile"],
            mark_commit=loaded["mark_commit"],
            floor_analyze=analyze_s,
            floor_diff=floor_s,
            floor_diff_staging=staging_s,
            diff=diff_s,
            forget_staging=forget_s,
        )
        log(
            f"rep {rep + 1}/{repeats}: floor COPY {copy_s:.2f} s; flow load {loaded['total']:.2f} s (inspect "
            f"{loaded['inspect']:.2f}, COPY {loaded['copy']:.2f}, checks {loaded['checks']:.2f}, profile "
            f"{loaded['profile']:.2f}, start+mark+commit "
            f"{loaded['start'] + loaded['mark_commit']:.2f}); floor diff {floor_s:.2f} s (over the unanalyzed "
            f"staging rows {staging_s:.2f} s); flow diff {diff_s:.2f} s (+ staging DROP {forget_s:.2f} s); "
            f"{done.differences} differences"
        )
        forget_run(conn, loaded["run"], loaded["staging"])
    m = {name: median(values) for name, values in took.items()}
    figures = {
        "floor_copy_s": m["floor_copy"],
        "floor_copy_rows_per_s": rows / m["floor_copy"],
        "load_s": m["load"],
        "load_rows_per_s": rows / m["load"],
        "ratio_load_to_copy": m["floor_copy"] / m["load"],
        "load_inspect_s": m["inspect"],
        "load_copy_s": m["copy"],
        "load_checks_s": m["checks"],
        "load_profile_s": m["profile"],
        "load_start_mark_commit_s": m["start"] + m["mark_commit"],
        "load_copy_rows_per_s": rows / m["copy"],
        "floor_diff_s": m["floor_diff"],
        "floor_diff_rows_per_s": 2 * rows / m["floor_diff"],
        "floor_analyze_s": m["floor_analyze"],
        "floor_diff_staging_s": m["floor_diff_staging"],
        "floor_diff_staging_rows_per_s": 2 * rows / m["floor_diff_staging"],
        "diff_s": m["diff"],
        "diff_rows_per_s": 2 * rows / m["diff"],
        "ratio_diff_to_sql_join": m["floor_diff"] / m["diff"],
        "staging_drop_s": m["forget_staging"],
    }
    figures = {
        name: round(value) if name.endswith("_per_s") else round(value, 4)
        for name, value in figures.items()
    }
    figures.update(
        {
            f"{name}_runs_s": [round(v, 3) for v in values]
            for name, values in took.items()
            if name in ("floor_copy", "load", "floor_diff", "floor_diff_staging", "diff")
        }
    )
    return figures


def explain(conn, db, path: Path) -> None:
    """EXPLAIN ANALYZE of the checks and of the diff over one freshly loaded run, to stderr (the
    diff rolled back)."""
    settings = RunSettings(tolerance_abs=99)
    loaded = flow_load(db, path, settings)
    table = sql.Identifier(loaded["staging"]).as_string(conn)
    diff = compare._DIFF.format(
        table=table,
        lot_id="CAST(NULL AS bigint)",
        lot_join="",
        wms=compare._WMS_BY_SKU,
        materialized="NOT MATERIALIZED",
    )
    for name, statement, params in (
        (
            "checks._ROW_PROBLEMS",
            checks._ROW_PROBLEMS.format(table=table),
            {
                "quantity_max": checks.QUANTITY_MAX,
                "code_max": checks.CODE_MAX,
                "as_of_max": checks.AS_OF_MAX,
                "shown": checks.SHOWN,
            },
        ),
        (
            "compare._DIFF",
            diff,
            {
                "run": loaded["run"],
                "as_of": loaded["as_of"],
                "warehouses": loaded["warehouses"],
                "tolerance_abs": 99,
                "tolerance_pct": 0.0,
            },
        ),
    ):
        with conn.transaction(force_rollback=True):
            if name == "compare._DIFF":  # as compare.compare runs it
                for setting, value in compare.DIFF_PLANNER.items():
                    conn.execute("SELECT set_config(%s, %s, true)", (setting, value))
            plan = [
                row[0]
                for row in conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, params
                ).fetchall()
            ]
        log(f"EXPLAIN ANALYZE {name}:\n" + "\n".join(plan))
    forget_run(conn, loaded["run"], loaded["staging"])


def seed_yardstick(conn: psycopg.Connection, rows: int) -> None:
    """A done run of the same warehouses and shape as the feed, as last night's would be: the
    end to end then runs the erp_feed suite's shape checks too."""
    conn.execute(
        """
        INSERT INTO reconciliation_run (run_key, feed_name, feed_sha256, truth, settings, status, as_of, feed_rows,
                                        warehouse_ids, profile)
        SELECT 'bench-yardstick', 'yesterday.csv', repeat('0', 64), 'wms', '{"full_feed": false}', 'done',
               now() - interval '1 day', %(rows)s, (SELECT array_agg(id ORDER BY id) FROM warehouse),
               jsonb_build_object('rows', %(rows)s, 'zero_pct', 0, 'mean_qty', (SELECT avg(on_hand) FROM stock_balance))
        ON CONFLICT (run_key) DO NOTHING""",
        {"rows": rows},
    )


def command_line(conn: psycopg.Connection, path: Path, api_url: str) -> dict:
    """`cangflow run reconcile --erp-file` as an engineer runs it against a running Prefect
    server: a new process (its imports included), a feed as of now with the same differences."""
    write_feed(conn, path)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "reconcile", "--erp-file", str(path)],
        env={**os.environ, "PREFECT_API_URL": api_url},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - started
    log(f"command line: {seconds:.2f} s, exit {done.returncode}\n{done.stdout[-2000:]}")
    if done.returncode != 0:
        log(done.stderr[-4000:])
    return {"cli_wall_s": round(seconds, 3), "cli_exit_code": done.returncode}


def end_to_end(conn: psycopg.Connection, path: Path, rows: int, changed: int) -> dict:
    """The whole flow once in this process, under a temporary Prefect API, with the per-task
    times from its records; then the command line against that running server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from flows.reconcile import reconcile_flow

    copy = path.with_name("erp-feed-end-to-end.csv")
    shutil.copyfile(path, copy)
    started = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=180):
        log(f"end to end: Prefect test server up in {time.perf_counter() - started:.1f} s")
        started, called_at = time.perf_counter(), datetime.now(UTC)
        state = reconcile_flow(erp_file=str(copy), tolerance_abs=0, return_state=True)
        seconds = time.perf_counter() - started
        summary = state.result()
        flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        with get_client(sync_client=True) as client:
            tasks = client.read_task_runs(flow_run_filter=flow_run)
        cli = command_line(conn, path.with_name("erp-feed-command.csv"), PREFECT_API_URL.value())
    steps = {}
    # The issue's own measure: from the flow's call to its differences recorded (the compare
    # task's end; the task records' clock is this machine's), without the orders, the
    # summary and Prefect's end of the run after them.
    compared = [t for t in tasks if t.name.startswith("reconcile-compare") and t.end_time]
    to_differences = (compared[0].end_time - called_at).total_seconds() if compared else None
    for task in sorted(tasks, key=lambda t: t.start_time or t.expected_start_time):
        ran = (
            (task.end_time - task.start_time).total_seconds()
            if task.start_time and task.end_time
            else None
        )
        steps[task.name.rsplit("-", 1)[0]] = round(
            ran if ran is not None else task.total_run_time.total_seconds(), 3
        )
    log(
        f"end to end: {seconds:.2f} s ({rows / seconds:,.0f} rows/s); tasks {steps}; summary {summary}"
    )
    ok = (
        summary["status"] == "done"
        and summary["feed_rows"] == rows
        and summary["differences"] == changed
        and summary["lines_for_erp"] == changed
        and cli["cli_exit_code"] == 0
    )
    return {
        "end_to_end_s": round(seconds, 3),
        "end_to_end_rows_per_s": round(rows / seconds),
        "end_to_end_flow_seconds": summary["seconds"],
        "end_to_end_to_differences_s": None if to_differences is None else round(to_differences, 3),
        "end_to_end_tasks_s": steps,
        "end_to_end_differences": summary["differences"],
        "end_to_end_lines_for_erp": summary["lines_for_erp"],
        "end_to_end_ok": ok,
        **cli,
    }


# The WMS side as a dataframe user gets it: the balances with their codes, COPYed out as CSV.
PEER_WMS = """
COPY (SELECT w.code AS warehouse, s.code AS sku, b.on_hand AS wms_qty
      FROM stock_balance b JOIN warehouse w ON w.id = b.warehouse_id JOIN sku s ON s.id = b.sku_id)
TO STDOUT WITH (FORMAT csv, HEADER true)
"""


def wms_csv(conn: psycopg.Connection) -> io.BytesIO:
    out = io.BytesIO()
    with conn.cursor() as cursor, cursor.copy(PEER_WMS) as copy:
        for chunk in copy:
            out.write(chunk)
    out.seek(0)
    return out


def peer_pandas(conn: psycopg.Connection, path: Path) -> int:
    import pandas as pd

    feed = pd.read_csv(
        path, usecols=["warehouse", "sku", "quantity"], dtype={"warehouse": str, "sku": str}
    )
    wms = pd.read_csv(wms_csv(conn), dtype={"warehouse": str, "sku": str})
    joined = feed.merge(wms, on=["warehouse", "sku"], how="outer")
    return int((joined["quantity"].fillna(0) != joined["wms_qty"].fillna(0)).sum())


def peer_polars(conn: psycopg.Connection, path: Path) -> int:
    import polars as pl

    feed = pl.read_csv(path, columns=["warehouse", "sku", "quantity"])
    wms = pl.read_csv(wms_csv(conn))
    joined = feed.join(wms, on=["warehouse", "sku"], how="full", coalesce=True)
    return joined.filter(pl.col("quantity").fill_null(0) != pl.col("wms_qty").fill_null(0)).height


# reladiff's join diff runs in the database both tables are in: the feed COPYed into a table of
# its own (timed: a reladiff user loads the file first), the WMS side a view of the balances by
# code, both under the same column names, keyed by warehouse and SKU.
RELADIFF_TABLES = """
DROP TABLE IF EXISTS bench_peer_feed;
CREATE UNLOGGED TABLE bench_peer_feed (warehouse text, sku text, lot text, qty bigint, as_of text);
CREATE OR REPLACE VIEW bench_peer_wms AS
SELECT w.code AS warehouse, s.code AS sku, b.on_hand AS qty
FROM stock_balance b JOIN warehouse w ON w.id = b.warehouse_id JOIN sku s ON s.id = b.sku_id
"""


def peer_reladiff(conn: psycopg.Connection, path: Path) -> int:
    """reladiff's join diff (`diff_tables`, algorithm JOINDIFF, with its defaults: the keys are
    checked unique first), after a COPY of the file; the differing keys it reports (a changed
    row comes out as a `-` and a `+` line)."""
    import reladiff

    conn.execute(RELADIFF_TABLES)
    with conn.cursor() as cursor:
        copy_file(
            cursor,
            "COPY bench_peer_feed FROM STDIN WITH (FORMAT csv, HEADER true, ENCODING 'UTF8')",
            path,
        )
    info = conn.info  # the bench's own connection settings, a socket directory or a password too
    where = {
        "driver": "postgresql",
        "host": info.host,
        "port": info.port,
        "user": info.user,
        "dbname": info.dbname,
        **({"password": info.password} if info.password else {}),
    }
    keys, compared = ("warehouse", "sku"), ("qty",)
    erp = reladiff.connect_to_table(where, "bench_peer_feed", keys, extra_columns=compared)
    wms = reladiff.connect_to_table(where, "bench_peer_wms", keys, extra_columns=compared)
    try:
        differences = reladiff.diff_tables(erp, wms, algorithm=reladiff.Algorithm.JOINDIFF)
        return len({row[:2] for _, row in differences})
    finally:
        erp.database.close()
        wms.database.close()
        conn.execute("DROP TABLE bench_peer_feed; DROP VIEW bench_peer_wms")


PEERS = {"pandas": peer_pandas, "polars": peer_polars, "reladiff": peer_reladiff}


def peers(conn: psycopg.Connection, path: Path, changed: int) -> dict:
    """The same feed diffed by the libraries a team might pick instead, each from the
    file and the database to its differences (imports excluded): seconds, and whether it found
    the same number of differences. A peer that is not installed (`uv sync --extra bench`) is
    reported as such."""
    figures: dict = {}
    for name, peer in PEERS.items():
        try:
            importlib.import_module(name)
        except ImportError:
            figures[f"peer_{name}_s"] = "not installed (uv sync --extra bench)"
            continue
        started = time.perf_counter()
        found = peer(conn, path)
        seconds = time.perf_counter() - started
        figures[f"peer_{name}_s"] = round(seconds, 3)
        figures[f"peer_{name}_same_differences"] = found == changed
        log(f"peer {name}: {seconds:.2f} s, {found} differences (expected {changed})")
    return figures


def run(args, url: str, skus: int) -> dict:
    db = warehouse.connect(url)
    conn = psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://", 1),
        autocommit=True,
        application_name="bench.reconcile raw",
    )
    # The flow's staging tables live in their own schema (warehouse.db.roles.STAGING_SCHEMA);
    # the raw floors read them by name, as the flow's own statements do.
    conn.execute("SET search_path TO public, cangflow_staging")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as folder:
            schema.upgrade(db)
            path = Path(folder) / "erp-feed.csv"
            rows, changed = setup(conn, skus, path)
            figures = {
                "rows": rows,
                "warehouses": WAREHOUSES,
                "skus": skus,
                "changed": changed,
                "feed_bytes": path.stat().st_size,
                "repeats": args.repeats,
                "postgres_version": conn.execute("SHOW server_version").fetchone()[0],
            }
            figures.update(repetitions(conn, db, path, rows, changed, args.repeats))
            log(
                f"medians: load {figures['load_rows_per_s']:,} rows/s vs COPY {figures['floor_copy_rows_per_s']:,} "
                f"(ratio {figures['ratio_load_to_copy']}); diff {figures['diff_rows_per_s']:,} rows/s vs join "
                f"{figures['floor_diff_rows_per_s']:,} (ratio {figures['ratio_diff_to_sql_join']})"
            )
            if args.explain:
                explain(conn, db, path)
            seed_yardstick(conn, rows)
            figures.update(end_to_end(conn, path, rows, changed))
            # After the flow: their memory and threads would weigh on its measure otherwise.
            figures.update(peers(conn, path, changed))
        # The least a reconciliation can cost: the file COPYed and one FULL JOIN writing the
        # differences (the floors above). The flow's in-process time over it (issue 16: <= 1.5).
        figures["sql_floor_s"] = round(figures["floor_copy_s"] + figures["floor_diff_s"], 4)
        figures["ratio_end_to_end_to_sql"] = round(
            figures["end_to_end_s"] / figures["sql_floor_s"], 3
        )
        if figures.get("end_to_end_to_differences_s") is not None:
            figures["ratio_to_differences_to_sql"] = round(
                figures["end_to_end_to_differences_s"] / figures["sql_floor_s"], 3
            )
        for name in PEERS:  # the flow against each peer that ran (< 1: the flow is ahead)
            if isinstance(figures.get(f"peer_{name}_s"), float):
                figures[f"ratio_end_to_end_to_{name}"] = round(
                    figures["end_to_end_s"] / figures[f"peer_{name}_s"], 3
                )
        figures["targets_met"] = {
            "ratio_load_to_copy_ge_0.7": figures["ratio_load_to_copy"] >= 0.7,
            "ratio_diff_to_sql_join_ge_0.8": figures["ratio_diff_to_sql_join"] >= 0.8,
            "ratio_end_to_end_to_sql_le_1.5": figures["ratio_end_to_end_to_sql"] <= 1.5,
            "ahead_of_pandas": figures.get("ratio_end_to_end_to_pandas", 0) < 1,
        }
        return figures
    finally:
        conn.close()
        db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=FULL_ROWS, help="feed rows = balance rows (default 1,000,000)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved runs of floors and flow steps (default 3)",
    )
    parser.add_argument(
        "--explain", action="store_true", help="EXPLAIN ANALYZE the checks and the diff (stderr)"
    )
    add_database_arguments(parser)
    args = parser.parse_args(argv)
    skus = args.rows // WAREHOUSES
    if args.rows < 10 * STRIDE or args.rows > 100_000_000:
        parser.error(f"--rows must be between {10 * STRIDE:,} and 100,000,000")

    _, url = database_url("reconcile", args.admin_url)
    # Before Prefect is imported and before the tasks' engine is first built.
    os.environ.update(
        DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", CANGFLOW_DATABASE_URL=url
    )
    from tasks.database import forget
    from warehouse.settings import get_settings

    get_settings.cache_clear()
    forget()
    started = time.perf_counter()
    with bench_database("reconcile", args.admin_url, keep=args.keep, log=log):
        log(
            f"database {make_url(url).database}: {WAREHOUSES} warehouses x {skus:,} SKUs, {args.repeats} repetitions"
        )
        try:
            figures = run(args, url, skus)
        finally:
            forget()  # the tasks' engine, or DROP ... WITH (FORCE) cuts its connections
    figures["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))
    same = all(figures.get(f"peer_{name}_same_differences", True) for name in PEERS)
    return 0 if figures["end_to_end_ok"] and same else 1


if __name__ == "__main__":
    sys.exit(main())
