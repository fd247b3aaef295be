"""Snapshot builds and as-of reads: how close `warehouse.snapshots` gets to PostgreSQL itself.

    uv run python -m bench.snapshot [--movements 10000000] [--days 365] [--repeats 5] [--keep]
                                    [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

It creates its own database (`cangflow_bench_snapshot_<pid>`, dropped at the end unless --keep),
migrates it and loads a ledger with set-based SQL: 10 warehouses of one bin each, 10,000 SKUs
(scaled down with --movements, so the movements per key stay ~100), one balance row per
(warehouse, SKU), and the movements over --days UTC days ending yesterday: an opening receipt
per key on the first day, then random receipts and deductions. Balances are set to the sum of
their movements and everything is VACUUM ANALYZEd. With D1..D365 (D365 = yesterday), one run:
1. full: build_day(D330), the first snapshot, from the whole ledger.
2. backfill: build_day(D331..D360), one transaction each.
3. incremental vs floor, interleaved --repeats times (floor, flow, chain check, ...), medians:
   - floor: one hand-written INSERT ... SELECT of snapshot(D360) UNION ALL D361's movements,
     GROUP BY key, into a plain table with the snapshot's columns and primary key, + COMMIT.
   - flow: build_day(D361) in one Database.session() (commit included). D361 is deleted and its
     partition vacuumed before each run, untimed, so each is the nightly's first build of a day.
   - verify_day(D361), the chain check, in its own transaction, timed apart.
   One more force rebuild over the existing D361 is reported as incremental_replace_s.
4. build D362..D365 and verify_latest (exit 1 unless ok).
5. 1,000 random (warehouse, SKU, as_of in D331..D365) read twice, interleaved with a prepared
   raw primary-key lookup (autocommit, one round trip) of the snapshot row the as-of read
   starts from: through `DirectStock(db).on_hand(as_of=)` (one autocommit statement on a pooled
   connection; as_of_direct_*, the figure in ratio_as_of_p99_to_pgbench_pk), and through
   stock.on_hand(as_of=) in its own Database.session() (as_of_* times the on_hand call, its
   implicit BEGIN included; as_of_session_* adds the session's COMMIT;
   ratio_session_as_of_p99_to_pgbench_pk). The first 20 are warm-up (statements get
   prepared). Every 20th answer of each path is checked against sum(qty) over the ledger up
   to as_of (exit 1 on a mismatch).

Progress goes to stderr; the last line of stdout is one JSON object.
"""

import argparse
import json
import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

import warehouse
from bench import pgbench
from bench.common import add_database_arguments, bench_database
from warehouse import snapshots, stock
from warehouse.db import schema
from warehouse.history import partitions
from warehouse.history.calendar import day_end, day_start

FULL_MOVEMENTS, FULL_SKUS, WAREHOUSES = 10_000_000, 10_000, 10
OPENING_QTY = 1_000_000  # >> the ~100 movements of at most 50 units a key gets: never negative
AS_OF_QUERIES, AS_OF_WARMUP, CHECK_EVERY = 1000, 20, 20
KEY = "warehouse_id, sku_id, balance_id, location_id, lot_id"

LOAD_MASTER = [
    (
        "INSERT INTO warehouse (code, name) SELECT 'BW' || lpad(w::text, 2, '0'), 'snapshot bench' "
        "FROM generate_series(1, %(warehouses)s) w"
    ),
    "INSERT INTO location (warehouse_id, code) SELECT id, 'BIN-1' FROM warehouse",
    "INSERT INTO sku (code) SELECT 'BSKU-' || lpad(s::text, 6, '0') FROM generate_series(1, %(skus)s) s",
    (
        "INSERT INTO stock_balance (warehouse_id, location_id, sku_id, on_hand, version) "
        "SELECT w.id, l.id, s.id, 0, 1 FROM warehouse w JOIN location l ON l.warehouse_id = w.id CROSS JOIN sku s "
        "ORDER BY w.id, s.id"
    ),
    # Dense key numbers 1..keys, so a random key is one hash-join probe.
    (
        "CREATE TEMP TABLE bench_key AS SELECT CAST(row_number() OVER (ORDER BY id) AS int) AS k, "
        "id AS balance_id, warehouse_id, location_id, sku_id FROM stock_balance"
    ),
    "ALTER TABLE bench_key ADD PRIMARY KEY (k)",
    "ANALYZE bench_key",
]
_MOVEMENT_COLUMNS = (
    "occurred_at, movement_type, operation_id, balance_id, warehouse_id, location_id, sku_id, qty, "
    "reference"
)
LOAD_OPENING = f"""
INSERT INTO stock_movement ({_MOVEMENT_COLUMNS})
SELECT %(first)s + random() * interval '1 day', 'receipt', nextval('stock_operation_id_seq'),
       balance_id, warehouse_id, location_id, sku_id, {OPENING_QTY}, 'bench opening'
FROM bench_key
"""
# Uniform over day 2 .. the last day; receipts and deductions of 1..50 units, half each.
LOAD_MOVEMENTS = f"""
INSERT INTO stock_movement ({_MOVEMENT_COLUMNS})
SELECT %(second)s + r.t * %(span)s, CASE WHEN r.q > 0 THEN 'receipt' ELSE 'deduction' END,
       nextval('stock_operation_id_seq'), k.balance_id, k.warehouse_id, k.location_id, k.sku_id, r.q, 'bench'
FROM (SELECT 1 + CAST(floor(random() * %(keys)s) AS int) AS k, random() AS t,
             (CASE WHEN random() < 0.5 THEN 1 ELSE -1 END) * (1 + CAST(floor(random() * 50) AS bigint)) AS q
      FROM generate_series(1, %(n)s)) AS r
JOIN bench_key k USING (k)
"""
SET_BALANCES = """
UPDATE stock_balance b SET on_hand = m.total, reserved = 0
FROM (SELECT balance_id, sum(qty) AS total FROM stock_movement GROUP BY balance_id) AS m
WHERE m.balance_id = b.id
"""

# A plain table (no partition routing) with the snapshot's columns and primary key.
FLOOR_TABLE = (
    "CREATE TABLE bench_floor "
    "(LIKE stock_snapshot INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
)

# The least a snapshot day can cost: previous day + the day's movements, summed per key.
# Same HAVING as the flow, so both write the same rows (checked).
FLOOR = f"""
INSERT INTO bench_floor (snapshot_date, {KEY}, on_hand, reserved)
SELECT %(day)s, {KEY}, sum(on_hand), sum(reserved)
FROM (SELECT {KEY}, on_hand, reserved FROM stock_snapshot WHERE snapshot_date = %(base)s
      UNION ALL
      SELECT {KEY}, qty, reserved_qty FROM stock_movement WHERE occurred_at >= %(start)s AND occurred_at < %(end)s
     ) AS changes
GROUP BY {KEY}
HAVING sum(on_hand) <> 0 OR sum(reserved) <> 0
"""
PK_LOOKUP = "SELECT sum(on_hand) FROM stock_snapshot WHERE snapshot_date = %s AND warehouse_id = %s AND sku_id = %s"
LEDGER_AS_OF = (
    "SELECT coalesce(sum(qty), 0) FROM stock_movement "
    "WHERE warehouse_id = %s AND sku_id = %s AND occurred_at <= %s"
)


def log(message: str) -> None:
    print(f"[bench.snapshot] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def load(
    conn: psycopg.Connection, db: warehouse.Database, args, skus: int, first: date, last: date
) -> dict:
    """The bench's ledger, set-based; returns counts. `conn` is autocommit (VACUUM needs it)."""
    keys = WAREHOUSES * skus
    with db.session() as s:  # partitions first, or every movement lands in the default partition
        partitions.ensure_range(s, first, last + timedelta(days=1))
    started = time.perf_counter()
    with conn.transaction():
        for statement in LOAD_MASTER:
            conn.execute(statement, {"warehouses": WAREHOUSES, "skus": skus})
        conn.execute(LOAD_OPENING, {"first": day_start(first)})
        conn.execute(
            LOAD_MOVEMENTS,
            {
                "second": day_start(first + timedelta(days=1)),
                "span": day_end(last) - day_start(first + timedelta(days=1)),
                "keys": keys,
                "n": args.movements - keys,
            },
        )
        conn.execute(SET_BALANCES)
    inserted = time.perf_counter() - started
    log(
        f"load: {args.movements} movements, {keys} keys inserted in {inserted:.1f} s; VACUUM ANALYZE ..."
    )
    conn.execute("VACUUM (ANALYZE)")  # hint bits and statistics now, not inside a timed build
    return {"load_s": round(time.perf_counter() - started, 2), "load_insert_s": round(inserted, 2)}


def build(db: warehouse.Database, day: date, expect: str):
    """build_day in its own transaction, commit included: the flow's step."""
    started = time.perf_counter()
    with db.session() as s:
        built = snapshots.build_day(s, day, force=True)
    seconds = time.perf_counter() - started
    if built.mode != expect:
        raise SystemExit(f"build_day({day}) ran {built.mode!r}, expected {expect!r}")
    return built, seconds


def verify(db: warehouse.Database, day: date) -> float:
    started = time.perf_counter()
    with db.session() as s:
        result = snapshots.verify_day(s, day)
    seconds = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"chain check failed: {result}")
    return seconds


def snapshot_partition(day: date) -> sql.Identifier:
    return sql.Identifier(partitions.partition_name("stock_snapshot", partitions.month_start(day)))


def incremental_vs_floor(conn, db, base: date, day: date, repeats: int) -> dict:
    """Floor, flow and chain check on `day`, interleaved so machine noise hits them alike."""
    conn.execute(FLOOR_TABLE)
    params = {"day": day, "base": base, "start": day_start(day), "end": day_end(day)}
    floors, flows, verifies, rows = [], [], [], None
    for run in range(repeats):
        conn.execute("TRUNCATE bench_floor")
        started = time.perf_counter()
        with conn.transaction():
            floor_rows = conn.execute(FLOOR, params).rowcount
        floors.append(time.perf_counter() - started)
        # Untimed: the nightly builds a day that does not exist yet, into a partition without
        # the dead rows of the previous repetition.
        with conn.transaction():
            conn.execute("DELETE FROM stock_snapshot WHERE snapshot_date = %s", (day,))
            conn.execute("DELETE FROM snapshot_day WHERE snapshot_date = %s", (day,))
        conn.execute(sql.SQL("VACUUM {}").format(snapshot_partition(day)))
        built, seconds = build(db, day, "incremental")
        flows.append(seconds)
        verifies.append(verify(db, day))
        if built.rows != floor_rows:
            raise SystemExit(f"floor wrote {floor_rows} rows for {day}, build_day {built.rows}")
        rows = built.rows
        log(
            f"run {run + 1}/{repeats}: floor {floors[-1]:.3f} s, build_day {flows[-1]:.3f} s "
            f"(in-statement {built.seconds:.3f} s), verify_day {verifies[-1]:.3f} s, {rows} rows"
        )
    _, replace = build(db, day, "incremental")  # force rebuild over the day's existing rows
    floor, flow, check = median(floors), median(flows), median(verifies)
    return {
        "incremental_s": round(flow, 4),
        "floor_incremental_s": round(floor, 4),
        "ratio_incremental_to_floor": round(flow / floor, 3),
        "verify_day_s": round(check, 4),
        "ratio_incremental_with_verify_to_floor": round((flow + check) / floor, 3),
        "incremental_replace_s": round(replace, 4),
        "incremental_runs_s": [round(x, 4) for x in flows],
        "floor_runs_s": [round(x, 4) for x in floors],
        "rows_per_snapshot_day": rows,
        "day_movements": conn.execute(
            "SELECT count(*) FROM stock_movement WHERE occurred_at >= %s AND occurred_at < %s",
            (day_start(day), day_end(day)),
        ).fetchone()[0],
    }


PGBENCH_PK_SELECT = """\\set id random(:lo, :hi)
SELECT on_hand FROM stock_balance WHERE id = :id;
"""


def pgbench_pk_select(conn, db, transactions: int) -> list[float]:
    """pgbench's primary-key SELECT, one client, as many transactions as the as-of reads: the
    least a one-row read costs through libpq (autocommit, prepared)."""
    lo, hi = conn.execute("SELECT min(id), max(id) FROM stock_balance").fetchone()
    return pgbench.latencies_ms(
        db.url.render_as_string(hide_password=False),
        PGBENCH_PK_SELECT,
        transactions=transactions,
        variables={"lo": lo, "hi": hi},
    )


def as_of_reads(conn, db, first: date, last: date, seed: int) -> dict:
    """on_hand(as_of=) against a raw PK lookup of the snapshot it starts from, interleaved."""
    items = conn.execute(
        "SELECT w.code, s.code, w.id, s.id FROM stock_balance b "
        "JOIN warehouse w ON w.id = b.warehouse_id JOIN sku s ON s.id = b.sku_id "
        "ORDER BY b.id"
    ).fetchall()
    rng = random.Random(seed)
    span_days = (last - first).days + 1
    as_of_ms, session_ms, direct_ms, lookup_ms, checks = [], [], [], [], []
    direct = stock.DirectStock(db)
    for n in range(AS_OF_WARMUP + AS_OF_QUERIES):
        wh, sku, wh_id, sku_id = rng.choice(items)
        day = first + timedelta(days=rng.randrange(span_days))
        as_of = day_start(day) + timedelta(microseconds=rng.randrange(86_400 * 10**6))
        started = time.perf_counter()
        with db.session() as s:
            called = time.perf_counter()
            value = stock.on_hand(s, warehouse=wh, sku=sku, as_of=as_of)
            returned = time.perf_counter()
        ended = time.perf_counter()
        direct_started = time.perf_counter()
        direct_value = direct.on_hand(warehouse=wh, sku=sku, as_of=as_of)
        direct_ended = time.perf_counter()
        # The snapshot row the as-of read starts from: every day from first - 1 on is built.
        lookup_started = time.perf_counter()
        conn.execute(PK_LOOKUP, (day - timedelta(days=1), wh_id, sku_id), prepare=True).fetchone()
        lookup_ended = time.perf_counter()
        if n < AS_OF_WARMUP:  # statements get prepared, caches warm
            continue
        as_of_ms.append((returned - called) * 1000)
        session_ms.append((ended - started) * 1000)
        direct_ms.append((direct_ended - direct_started) * 1000)
        lookup_ms.append((lookup_ended - lookup_started) * 1000)
        if n % CHECK_EVERY == 0:
            checks.append((wh, sku, wh_id, sku_id, as_of, value))
            checks.append((wh, sku, wh_id, sku_id, as_of, direct_value))
    mismatches = []
    for wh, sku, wh_id, sku_id, as_of, value in checks:  # after the timing, so it disturbs nothing
        expected = conn.execute(LEDGER_AS_OF, (wh_id, sku_id, as_of)).fetchone()[0]
        if expected != value:
            mismatches.append(
                f"{wh}/{sku} as of {as_of.isoformat()}: on_hand {value}, ledger {expected}"
            )
    for mismatch in mismatches:
        log(f"as_of MISMATCH {mismatch}")
    figures = {
        "as_of_p50_ms": percentile(as_of_ms, 50),
        "as_of_p99_ms": percentile(as_of_ms, 99),
        "as_of_session_p50_ms": percentile(session_ms, 50),
        "as_of_session_p99_ms": percentile(session_ms, 99),
        "as_of_direct_p50_ms": percentile(direct_ms, 50),
        "as_of_direct_p99_ms": percentile(direct_ms, 99),
        "pk_lookup_p50_ms": percentile(lookup_ms, 50),
        "pk_lookup_p99_ms": percentile(lookup_ms, 99),
    }
    figures = {name: round(value, 3) for name, value in figures.items()}
    figures["ratio_as_of_p99_to_pk_lookup"] = round(
        figures["as_of_direct_p99_ms"] / figures["pk_lookup_p99_ms"], 2
    )
    figures["ratio_as_of_p50_to_pk_lookup"] = round(
        figures["as_of_direct_p50_ms"] / figures["pk_lookup_p50_ms"], 2
    )
    floor = pgbench_pk_select(conn, db, len(as_of_ms))
    figures.update(
        pgbench_pk_p50_ms=round(percentile(floor, 50), 3),
        pgbench_pk_p99_ms=round(percentile(floor, 99), 3),
    )
    figures["ratio_as_of_p99_to_pgbench_pk"] = round(
        figures["as_of_direct_p99_ms"] / figures["pgbench_pk_p99_ms"], 2
    )
    figures["ratio_session_as_of_p99_to_pgbench_pk"] = round(
        figures["as_of_p99_ms"] / figures["pgbench_pk_p99_ms"], 2
    )
    figures.update(
        as_of_queries=len(as_of_ms), as_of_checked=len(checks), as_of_mismatches=len(mismatches)
    )
    log(
        f"as_of: direct p50 {figures['as_of_direct_p50_ms']} ms, p99 {figures['as_of_direct_p99_ms']} ms; "
        f"session path p50 {figures['as_of_p50_ms']} ms, p99 {figures['as_of_p99_ms']} ms (with session "
        f"{figures['as_of_session_p99_ms']} ms); pk lookup p50 {figures['pk_lookup_p50_ms']} ms, p99 "
        f"{figures['pk_lookup_p99_ms']} ms; pgbench primary-key SELECT p99 {figures['pgbench_pk_p99_ms']} ms; "
        f"{len(checks)} checked against the ledger, {len(mismatches)} mismatches"
    )
    return figures


def run(args, url: str, skus: int) -> dict:
    last = datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=args.days - 1)
    d = {
        offset: last - timedelta(days=35 - offset) for offset in range(36)
    }  # d[0] = D330 .. d[35] = D365
    db = warehouse.connect(url)
    conn = psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://", 1),
        autocommit=True,
        application_name="bench.snapshot raw",
    )
    try:
        schema.upgrade(db)
        figures = {
            "movements": args.movements,
            "warehouses": WAREHOUSES,
            "skus": skus,
            "keys": WAREHOUSES * skus,
            "days": args.days,
            "scale": round(args.movements / FULL_MOVEMENTS, 4),
            "first_day": str(first),
            "last_day": str(last),
            "repeats": args.repeats,
        }
        figures.update(load(conn, db, args, skus, first, last))
        log(f"load done in {figures['load_s']} s")

        built, seconds = build(db, d[0], "full")
        figures.update(full_s=round(seconds, 3), full_rows=built.rows)
        log(f"full: build_day({d[0]}) {seconds:.2f} s, {built.rows} rows")

        days = []
        for offset in range(1, 31):
            built, seconds = build(db, d[offset], "incremental")
            days.append(seconds)
        figures.update(
            backfill_30d_s=round(sum(days), 3),
            backfill_day_median_s=round(median(days), 4),
            backfill_day_max_s=round(max(days), 4),
        )
        log(
            f"backfill: {d[1]}..{d[30]} in {sum(days):.2f} s (median {median(days):.3f} s/day, max {max(days):.3f})"
        )

        conn.execute(
            "ANALYZE stock_snapshot"
        )  # what autovacuum would do; not in the middle of a timed run
        figures.update(incremental_vs_floor(conn, db, d[30], d[31], args.repeats))

        for offset in range(32, 36):
            build(db, d[offset], "incremental")
        with db.session() as s:
            latest = snapshots.verify_latest(s)
        log(f"built {d[32]}..{d[35]}; {latest}")
        figures["verify_latest_ok"] = bool(latest and latest.ok)
        if not figures["verify_latest_ok"]:
            return figures

        conn.execute("ANALYZE stock_snapshot")
        figures.update(as_of_reads(conn, db, d[1], d[35], args.seed))
        figures["targets_met"] = {
            "incremental_le_1.5x_floor": figures["ratio_incremental_to_floor"] <= 1.5,
            "as_of_p99_le_2x_lookup": figures["ratio_as_of_p99_to_pk_lookup"] <= 2,
            "as_of_p99_le_2x_pgbench_pk": figures["ratio_as_of_p99_to_pgbench_pk"] <= 2,
        }
        figures["postgres_version"] = conn.execute("SHOW server_version").fetchone()[0]
        return figures
    finally:
        conn.close()
        db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--movements", type=int, default=FULL_MOVEMENTS, help="ledger size (default 10,000,000)"
    )
    parser.add_argument(
        "--days", type=int, default=365, help="UTC days of ledger, ending yesterday (default 365)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs of floor and incremental (default 5)"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="of the as_of picks (the ledger uses random())"
    )
    add_database_arguments(parser)
    args = parser.parse_args(argv)
    # Scale SKUs with the ledger so each key keeps ~100 movements, as at full size.
    skus = max(1, round(FULL_SKUS * args.movements / FULL_MOVEMENTS))
    if args.movements < 2 * WAREHOUSES * skus:
        parser.error(f"--movements must be at least {2 * WAREHOUSES * skus}")
    if args.days < 40:
        parser.error("--days must be at least 40 (the phases use the last 36 days)")

    started = time.perf_counter()
    with bench_database("snapshot", args.admin_url, keep=args.keep, log=log) as url:
        log(
            f"database {make_url(url).database}: {args.movements} movements, {WAREHOUSES} warehouses x {skus} SKUs "
            f"x {args.days} days"
        )
        figures = run(args, url, skus)
    figures["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))
    ok = figures["verify_latest_ok"] and figures.get("as_of_mismatches") == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
