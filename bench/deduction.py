"""Deduction throughput: how close `warehouse.stock` gets to what PostgreSQL itself can do.

    CANGFLOW_DATABASE_URL=postgresql+psycopg://... uv run python -m bench.deduction [--seconds 10]
                                                                  [--repeats 1]

With --repeats N every phase below, floors included, runs N times in rounds (the whole list,
then again), and each figure is the median of its rounds (`phase_runs` lists them): on a noisy
machine a ratio then compares medians measured in the same rounds, not two single readings
taken a minute apart.

Each phase runs `--workers` (16) processes, one connection each, released together by a barrier;
they warm up for 1 s, then count committed transactions until a shared stop time `--seconds` later.
- raw floor: plain psycopg, guarded UPDATE of one balance row + ledger INSERT + COMMIT. No
  deduction can write less, so this is the ceiling the domain code is measured against.
- deduct: `DirectStock(db).deduct(qty=1)`, the direct path (one autocommit statement).
- deduct_session: `stock.deduct(qty=1)` in one `Database.session()` transaction, the path of a
  caller that composes several operations in one transaction.
- deduct_order: `DirectStock(db).deduct_order` of 50 distinct spread SKUs; reported in lines/s.
  `order` measures the steady state of a process that has served these SKUs before: each
  worker first looks up all their ids once (`resolve.looked_up`, what a call does for the
  codes it has not met), so no order pays that lookup. `order_cold` starts each worker with an
  empty id cache, as a process just started: with 10,000 SKUs and 50 random ones per order,
  nearly every order of its few seconds meets a code it has not, and pays one more round trip.
- combined_hot: `CombiningDeductions.deduct(qty=1)` of the hot SKU from `--workers` threads of
  one process (combining gathers the callers of one process), each with its own pooled
  connection; `ratio_combined_to_pgbench_hot` is its rate over the three-statement pgbench floor
  on the same row (issue 16's goal: >= 3), with its p50/p99 latency beside deduct_hot's.
- pgbench floors (`bench.pgbench`, the same clients and seconds): the three statements of a
  deduction (guarded UPDATE, ledger INSERT, outbox INSERT) in one transaction, and the same as
  one CTE statement in autocommit. `ratio_to_pgbench_hot` / `ratio_to_pgbench_spread` are
  deduct's rate over the three-statement floor's (issue 16's goal: >= 0.8).
- pgbench_domain_spread: the direct path's own single-row statement, run by pgbench on the
  spread rows: what the statement costs with nothing around it but libpq
  (`ratio_domain_statement_to_pgbench_spread`; deduct's gap beyond it is the Python client's).
- python_domain_spread: the same statement sent by the leanest Python client there is, one
  process per worker as deduct's: a plain psycopg connection set up as the engine's, the
  statement sent through `warehouse.db.prepared` (libpq, prepared, one autocommit round trip)
  with the parameters the direct path would bind, and nothing else: no validation, metrics,
  pool or result objects. `ratio_python_floor_to_pgbench_spread` is what any Python caller of
  this statement reaches on the machine; `ratio_to_python_floor_spread` is deduct over it, the
  share left after cangflow's own client code.
- order floors (pgbench, the same clients and seconds, 50 random spread SKUs per order):
  `order_floor_lines_per_s`, one plain set-based statement (the 50 rows locked in key order,
  their guarded UPDATE, ledger lines and one outbox message), and
  `pgbench_domain_order_lines_per_s`, the direct path's
  allocating statement for the same order; `ratio_order_to_sql_floor` is deduct_order's rate
  over the plain statement's.
Raw and deduct run against one hot SKU (all workers queue on one row lock: lock hand-off speed)
and against 10,000 spread SKUs (few lock waits: per-transaction cost, where overhead shows).

It makes its own uniquely named warehouse, bin and SKUs with 10^9 units each (set-based: one
balance row, its receipt movement and its outbox message per SKU) and ANALYZEs, so it runs on a
fresh database and changes no other data. The raw floor writes no outbox message (it is a floor);
afterwards one INSERT gives each raw operation its message, so `warehouse.invariants.check` stays
clean (exit 1 if not). One 50-line deduct_order
statement, captured as the domain code sends it, is run under EXPLAIN (ANALYZE, BUFFERS) in a
rolled-back transaction; the plan goes to bench/results/deduct_order_plan.txt.

Progress goes to stderr; the last line of stdout is one JSON object ("16_workers" in a key name
stays whatever `--workers` is; `workers` holds the real count).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import re
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.orm import Session

import warehouse
from bench import pgbench
from warehouse import catalog, invariants, stock
from warehouse.catalog import csv_import as catalog_import
from warehouse.db import prepared, schema
from warehouse.db.engine import set_session_defaults
from warehouse.stock import resolve
from warehouse.stock.statements import (
    DIRECT_SINGLE_ROW_TAKE_STATEMENTS,
    DIRECT_TAKE_STATEMENTS,
    RENDERED,
    TAKE_STATEMENTS,
)

STOCK_PER_ROW = 10**9
WARMUP_SECONDS = 1.0
ORDER_LINES = 50
RESULTS = Path(__file__).resolve().parent / "results"

RAW_UPDATE = """UPDATE stock_balance SET on_hand = on_hand - 1, version = version + 1
WHERE id = %s AND on_hand - reserved >= 1"""
RAW_INSERT = """INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id,
                            warehouse_id, location_id, sku_id, lot_id, qty)
VALUES (now(), 'deduction', nextval('stock_operation_id_seq'), %s, %s, %s, %s, %s, -1)"""

# Setup stock: one balance row per SKU and the receipt movement it equals.
SEED_STOCK = """
WITH bin AS (
    SELECT w.id AS warehouse_id, l.id AS location_id FROM warehouse w JOIN location l ON l.warehouse_id = w.id
    WHERE w.code = :warehouse AND l.code = :location
),
balances AS (
    INSERT INTO stock_balance (warehouse_id, location_id, sku_id, on_hand, version)
    SELECT bin.warehouse_id, bin.location_id, s.id, :qty, 1 FROM bin, sku s WHERE s.code = ANY (CAST(:skus AS text[]))
    RETURNING id, warehouse_id, location_id, sku_id, on_hand
)
INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, location_id,
                            sku_id, lot_id, qty, reference)
SELECT now(), 'receipt', nextval('stock_operation_id_seq'), id, warehouse_id, location_id, sku_id, NULL, on_hand,
       'bench setup'
FROM balances
"""

# One outbox message per operation the bench wrote itself (setup receipts, raw-floor picks),
# shaped like the domain's, marked as the bench's.
BACKFILL_OUTBOX = """
INSERT INTO outbox_message (topic, message_key, operation_id, payload)
SELECT 'stock.changed', CAST(:warehouse AS text), m.operation_id, jsonb_build_object(
    'operation', CASE m.movement_type WHEN 'receipt' THEN 'bench_setup_receive' ELSE 'bench_raw_deduct' END,
    'operation_id', m.operation_id, 'warehouse', CAST(:warehouse AS text),
    'key', NULL, 'reference', 'bench raw floor', 'occurred_at', m.occurred_at,
    'items', jsonb_build_array(jsonb_build_object(
        'movement_id', m.id, 'movement_type', m.movement_type, 'sku', s.code,
        'location', CAST(:location AS text), 'lot', NULL, 'qty', m.qty, 'reserved_qty', m.reserved_qty)))
FROM stock_movement m JOIN sku s ON s.id = m.sku_id
WHERE m.warehouse_id = :warehouse_id
  AND NOT EXISTS (SELECT 1 FROM outbox_message o WHERE o.operation_id = m.operation_id)
"""


# The pgbench floors: a deduction's three statements, and the same as one statement. Every
# transaction writes its ledger row and its outbox message, so the invariants hold afterwards.
# Spread picks a balance id in [lo, hi] other than the hot one (the bench's ids are contiguous).
PICK_SPREAD = r"""\set bal random(:lo, :hi - 1)
\if :bal >= :hot
\set bal :bal + 1
\endif
"""
PICK_HOT = "\\set bal :hot\n"
_PAYLOAD = """jsonb_build_object('operation', 'bench_pgbench_deduct', 'operation_id', {op},
    'warehouse', CAST(:warehouse AS text), 'key', NULL, 'reference', 'bench pgbench floor',
    'occurred_at', now(), 'items', jsonb_build_array(jsonb_build_object('movement_id', {movement},
    'movement_type', 'deduction', 'sku', (SELECT code FROM sku WHERE id = {sku}),
    'location', CAST(:location AS text), 'lot', NULL, 'qty', -1, 'reserved_qty', 0)))"""
THREE_STATEMENTS = (
    r"""BEGIN;
UPDATE stock_balance SET on_hand = on_hand - 1, version = version + 1
WHERE id = :bal AND on_hand - reserved >= 1 RETURNING warehouse_id, location_id, sku_id \gset
INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id,
                            location_id, sku_id, lot_id, qty)
VALUES (now(), 'deduction', nextval('stock_operation_id_seq'), :bal, :warehouse_id, :location_id,
        :sku_id, NULL, -1)
RETURNING id AS movement_id, operation_id \gset
INSERT INTO outbox_message (topic, message_key, operation_id, payload)
VALUES ('stock.changed', CAST(:warehouse AS text), :operation_id, """
    # pgbench binds its variables as parameters of no type: jsonb_build_object needs one.
    + _PAYLOAD.format(
        op="CAST(:operation_id AS bigint)",
        movement="CAST(:movement_id AS bigint)",
        sku="CAST(:sku_id AS bigint)",
    )
    + """);
END;
"""
)
ONE_STATEMENT = (
    """WITH taken AS (
    UPDATE stock_balance SET on_hand = on_hand - 1, version = version + 1
    WHERE id = :bal AND on_hand - reserved >= 1 RETURNING id, warehouse_id, location_id, sku_id),
moved AS (
    INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id,
                                location_id, sku_id, lot_id, qty)
    SELECT now(), 'deduction', nextval('stock_operation_id_seq'), id, warehouse_id, location_id,
           sku_id, NULL, -1
    FROM taken RETURNING id, operation_id, sku_id)
INSERT INTO outbox_message (topic, message_key, operation_id, payload)
SELECT 'stock.changed', CAST(:warehouse AS text), operation_id, """
    + _PAYLOAD.format(op="operation_id", movement="id", sku="sku_id")
    + """
FROM moved;
"""
)


# The order floor: a 50-line deduction of 50 random spread SKUs as one plain set-based statement
# (its rows locked in key order, as concurrent orders must lock them or deadlock; the guarded
# UPDATE of those rows, their ledger lines, one outbox message with every line), none of the
# domain's FEFO plan, verdict or row-count check. What a set-based design can reach on this
# machine, next to deduct_order. pgbench draws SKU ids (s1..s50, the hot one skipped); the same
# draw may repeat an id (about once in eight orders: one line fewer).
def order_draws() -> str:
    return "".join(
        f"\\set s{n} random(:lo_sku, :hi_sku - 1)\n\\if :s{n} >= :hot_sku\n\\set s{n} :s{n} + 1\n\\endif\n"
        for n in range(1, ORDER_LINES + 1)
    )


ORDER_SKU_IDS = "CAST(ARRAY[{}] AS bigint[])".format(
    ", ".join(f"CAST(:s{n} AS bigint)" for n in range(1, ORDER_LINES + 1))
)
ORDER_FLOOR = f"""WITH locked AS MATERIALIZED (
    SELECT id FROM stock_balance
    WHERE warehouse_id = CAST(:warehouse_id AS bigint) AND sku_id = ANY ({ORDER_SKU_IDS})
    ORDER BY id FOR UPDATE),
taken AS (
    UPDATE stock_balance b SET on_hand = b.on_hand - 1, version = b.version + 1
    FROM locked WHERE b.id = locked.id AND b.on_hand - b.reserved >= 1
    RETURNING b.id, b.warehouse_id, b.location_id, b.sku_id),
op AS MATERIALIZED (SELECT nextval('stock_operation_id_seq') AS id),
moved AS (
    INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id,
                                location_id, sku_id, lot_id, qty)
    SELECT now(), 'deduction', op.id, t.id, t.warehouse_id, t.location_id, t.sku_id, NULL, -1
    FROM taken t, op RETURNING id, sku_id)
INSERT INTO outbox_message (topic, message_key, operation_id, payload)
SELECT 'stock.changed', CAST(:warehouse AS text), (SELECT id FROM op), jsonb_build_object(
    'operation', 'bench_pgbench_order', 'operation_id', (SELECT id FROM op),
    'warehouse', CAST(:warehouse AS text), 'key', NULL, 'reference', 'bench pgbench floor',
    'occurred_at', now(), 'items', jsonb_agg(jsonb_build_object('movement_id', m.id,
    'movement_type', 'deduction', 'sku', s.code, 'location', CAST(:location AS text), 'lot', NULL,
    'qty', -1, 'reserved_qty', 0) ORDER BY m.id))
FROM moved m JOIN sku s ON s.id = m.sku_id;
"""


def domain_script(rendered: str, values: dict[str, str]) -> str:
    """A domain statement (psycopg's %(name)s placeholders) as a pgbench script: each parameter
    replaced by the pgbench expression in `values` (a parameter it lacks is a KeyError: the
    statement changed, and this bench with it)."""
    script = re.sub(r"%\((\w+)\)s", lambda found: values[found.group(1)], rendered)
    return script.replace("%%", "%").strip().rstrip(";") + ";\n"


def domain_single_row_script() -> str:
    """The direct path's single-row deduction statement as pgbench runs it on the spread rows
    (`:bal`): the same statement with nothing around it but libpq. pgbench draws numbers, not
    codes, so the SKU's code is looked up from the drawn row inside the statement (where the
    statement names it: twice)."""
    return domain_script(
        RENDERED[DIRECT_SINGLE_ROW_TAKE_STATEMENTS["deduction"]],
        {
            "warehouse": ":warehouse",
            "sku": "(SELECT s.code FROM stock_balance b JOIN sku s ON s.id = b.sku_id WHERE b.id = :bal)",
            "location": "NULL",
            "lot": "NULL",
            "qty": "1",
            "occurred_at": "CAST(now() AS text)",
            "reference": "NULL",
            "reason": "NULL",
            "key": "NULL",
            "operation": "'deduct'",
            "digest": "NULL",
        },
    )


def domain_order_script() -> str:
    """The direct path's allocating statement for a 50-line order of the drawn SKUs, as pgbench
    runs it."""
    nothing = f"CAST(array_fill(NULL::bigint, ARRAY[{ORDER_LINES}]) AS bigint[])"
    return order_draws() + domain_script(
        RENDERED[DIRECT_TAKE_STATEMENTS["deduction"]],
        {
            "sku_ids": ORDER_SKU_IDS,
            "location_ids": nothing,
            "lot_ids": nothing,
            "qtys": f"array_fill(1::bigint, ARRAY[{ORDER_LINES}])",
            "warehouse_id": "CAST(:warehouse_id AS bigint)",
            "warehouse": ":warehouse",
            "occurred_at": "CAST(now() AS text)",
            "reference": "NULL",
            "reason": "NULL",
            "key": "NULL",
            "operation": "'deduct_order'",
            "digest": "NULL",
        },
    )


def _drawn_range(ids: list[int], kind: str) -> tuple[int, int, int]:
    """(the hot one, the lowest, the highest) of the bench's `kind` ids, which pgbench
    draws as numbers from that range: they must be contiguous."""
    if max(ids) - min(ids) + 1 != len(ids):
        raise SystemExit(f"pgbench floors: the bench's {kind} ids are not contiguous")
    return ids[0], min(ids), max(ids)


def pgbench_orders(world: World, script: str, *, workers: int, seconds: float) -> float:
    """pgbench running an order `script` over the spread SKUs (ids drawn by `order_draws`)."""
    return pgbench.run(
        world.url, script, clients=workers, seconds=seconds, variables=pgbench_variables(world)
    )


def pgbench_variables(world: World) -> dict[str, object]:
    """The variables of every pgbench script here: the hot and spread balance ids (PICK_HOT,
    PICK_SPREAD) and SKU ids (`order_draws`) as ranges, the warehouse and its bin."""
    hot, lo, hi = _drawn_range([row[0] for row in world.rows], "balance")
    hot_sku, lo_sku, hi_sku = _drawn_range([row[3] for row in world.rows], "SKU")
    return {
        "hot": hot,
        "lo": lo,
        "hi": hi,
        "hot_sku": hot_sku,
        "lo_sku": lo_sku,
        "hi_sku": hi_sku,
        "warehouse_id": world.rows[0][1],
        "warehouse": world.warehouse,
        "location": world.location,
    }


def pgbench_floor(world: World, script: str, *, hot: bool, workers: int, seconds: float) -> float:
    """pgbench running `script` on the hot row, or on the spread rows, with the bench's clients."""
    return pgbench.run(
        world.url,
        (PICK_HOT if hot else PICK_SPREAD) + script,
        clients=workers,
        seconds=seconds,
        variables=pgbench_variables(world),
    )


def log(message: str) -> None:
    print(f"[bench.deduction] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class World:
    """The bench's items. SKU 0 is the hot one, the rest are spread; rows[i] is skus[i]'s balance
    row as (balance_id, warehouse_id, location_id, sku_id, lot_id), ready for the raw INSERT."""

    url: str
    warehouse: str
    location: str
    skus: list[str]
    rows: list[tuple]


def build_world(db: warehouse.Database, spread: int) -> World:
    """The bench's items in a few set-based statements: SKUs through the catalog's bulk import,
    then per SKU one balance row, its receipt movement and (below) its outbox message, so the
    invariants hold from the start."""
    code = f"BENCH-{uuid.uuid4().hex[:10]}"
    location = f"{code}-BIN"
    skus = [f"{code}-HOT", *(f"{code}-S{i:05d}" for i in range(spread))]
    with db.session() as s:
        catalog.ensure_warehouse(s, code, "deduction benchmark")
        catalog.ensure_location(s, code, location)
        catalog_import.import_csv(
            s, "skus", ("code,name,category\n" + "".join(f"{sku},,\n" for sku in skus)).encode()
        )
        s.execute(
            text(SEED_STOCK),
            {"warehouse": code, "location": location, "qty": STOCK_PER_ROW, "skus": skus},
        )
        warehouse_id = s.execute(
            text("SELECT id FROM warehouse WHERE code = :code"), {"code": code}
        ).scalar_one()
        s.execute(
            text(BACKFILL_OUTBOX),
            {"warehouse": code, "location": location, "warehouse_id": warehouse_id},
        )
        by_code = {
            row[0]: tuple(row[1:])
            for row in s.execute(
                text(
                    """SELECT s.code, b.id, b.warehouse_id, b.location_id, b.sku_id, b.lot_id FROM stock_balance b
               JOIN sku s ON s.id = b.sku_id WHERE b.warehouse_id = :id"""
                ),
                {"id": warehouse_id},
            )
        }
    url = db.url.render_as_string(hide_password=False)
    return World(url, code, location, skus, [by_code[sku] for sku in skus])


def make_step(phase: str, world: World, rng: random.Random):
    """Open this worker's connection and return a function running one transaction of `phase`."""
    if phase == "python_domain_spread":
        return python_floor_step(world, rng, python_floor_connection(world))
    if phase.startswith("raw"):
        dsn = world.url.replace("postgresql+psycopg://", "postgresql://", 1)
        conn = psycopg.connect(dsn, application_name="bench.deduction raw")
        cursor = conn.cursor()
        rows = world.rows[:1] if phase == "raw_hot" else world.rows[1:]

        def raw() -> None:
            row = rng.choice(rows)
            try:
                cursor.execute(RAW_UPDATE, (row[0],), prepare=True)
                if cursor.rowcount != 1:
                    raise RuntimeError(f"guarded update refused balance {row[0]}")
                cursor.execute(RAW_INSERT, row, prepare=True)
                conn.commit()
            except Exception:
                conn.rollback()
                raise

        return raw
    db = warehouse.connect(world.url, pool_size=1)
    with db.session() as s:  # open the pooled connection before the clock starts
        s.execute(text("SELECT 1"))
    hot = phase in ("deduct_hot", "deduct_session_hot")
    skus = world.skus[:1] if hot else world.skus[1:]
    direct = stock.DirectStock(db)

    def deduct() -> None:
        direct.deduct(warehouse=world.warehouse, sku=rng.choice(skus), qty=1)

    def deduct_in_session() -> None:
        with db.session() as s:
            stock.deduct(s, warehouse=world.warehouse, sku=rng.choice(skus), qty=1)

    def order() -> None:
        direct.deduct_order(
            warehouse=world.warehouse, lines=[(sku, 1) for sku in rng.sample(skus, ORDER_LINES)]
        )

    if phase == "order":
        with db.direct_connection() as connection:
            items = [resolve.Item(sku) for sku in skus]
            if resolve.looked_up(connection, db.ids, world.warehouse, items) is None:
                raise RuntimeError("the bench's SKUs were not found")
    if phase.startswith("order"):
        return order
    return deduct_in_session if phase.startswith("deduct_session") else deduct


def python_floor_connection(world: World) -> psycopg.Connection:
    """A plain psycopg connection in autocommit with the session settings every engine
    connection has (`warehouse.db.engine`)."""
    dsn = world.url.replace("postgresql+psycopg://", "postgresql://", 1)
    conn = psycopg.connect(dsn, autocommit=True, application_name="bench.deduction python floor")
    set_session_defaults(conn)
    return conn


def python_floor_step(world: World, rng: random.Random, conn: psycopg.Connection):
    """One worker of the python_domain_spread floor: the direct path's single-row deduction
    statement on `conn`, through `warehouse.db.prepared`, and nothing around it."""
    statement = RENDERED[DIRECT_SINGLE_ROW_TAKE_STATEMENTS["deduction"]]
    skus = world.skus[1:]

    def deduct() -> None:
        [(_operation, items)] = prepared.fetch(
            conn,
            statement,
            {
                "warehouse": world.warehouse,
                "sku": rng.choice(skus),
                "location": None,
                "lot": None,
                "qty": 1,
                "occurred_at": datetime.now(UTC),
                "reference": None,
                "reason": None,
                "key": None,
                "operation": "deduct",
                "digest": None,
            },
        )
        if items is None:  # declined: a floor that skipped its write would measure nothing
            raise RuntimeError("the single-row statement declined a spread deduction")

    return deduct


# The floors next to each other and before the domain code, in one run (same machine state).
PHASES = (
    "raw_hot",
    "pgbench_three_hot",
    "pgbench_one_hot",
    "raw_spread",
    "pgbench_three_spread",
    "pgbench_one_spread",
    "pgbench_domain_spread",
    "python_domain_spread",
    "pgbench_order_floor",
    "pgbench_domain_order",
    "deduct_hot",
    "deduct_spread",
    "deduct_session_hot",
    "deduct_session_spread",
    "order_cold",
    "order",
)


def timed_loop(step, counted_from: float, stop: float) -> tuple[int, int, str | None, list[float]]:
    """Run `step` until `stop`: (committed in the window, failures, first failure, latencies of
    the committed ones in the window in seconds)."""
    done, errors, first_error, latencies = 0, 0, None, []
    while time.time() < stop:
        started = time.perf_counter()
        try:
            step()
        except Exception as error:  # counted and reported, never retried
            errors += 1
            first_error = first_error or f"{type(error).__name__}: {error}"
            continue
        if counted_from <= time.time() < stop:
            done += 1
            latencies.append(time.perf_counter() - started)
    return done, errors, first_error, latencies


def worker(phase: str, number: int, world: World, ready, go, clock, out) -> None:
    result: tuple = (0, 0, None, [])
    try:
        step = make_step(phase, world, random.Random(f"{phase}-{number}"))
        ready.wait()
        go.wait()
        result = timed_loop(step, clock[0], clock[1])
    except Exception as error:
        result = (0, 0, f"worker setup failed: {type(error).__name__}: {error}", [])
        ready.abort()
    out.put(result)


def percentile_ms(latencies: list[float], q: float) -> float | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def combined_count(outcome: str) -> float:
    """The process's own counter (prometheus_client's default registry) of combined deductions."""
    value = REGISTRY.get_sample_value(
        "cangflow_stock_combined_deductions_total", {"outcome": outcome}
    )
    return value or 0.0


def run_combined_phase(world: World, threads: int, seconds: float) -> dict:
    """`CombiningDeductions.deduct(qty=1)` of the hot SKU from `threads` threads of this one
    process (a WMS service's request threads), each its own pooled connection."""
    db = warehouse.connect(world.url, pool_size=threads)
    combining = stock.CombiningDeductions(stock.DirectStock(db))
    ready = threading.Barrier(threads + 1)
    clock: list[float] = []
    results: list[tuple] = []

    def run() -> None:
        with db.session() as s:  # open this thread's pooled connection before the clock starts
            s.execute(text("SELECT 1"))
        ready.wait()
        ready.wait()  # the clock is set between the two waits
        step = lambda: combining.deduct(warehouse=world.warehouse, sku=world.skus[0], qty=1)  # noqa: E731
        results.append(timed_loop(step, clock[0], clock[1]))

    outcomes = ("applied", "declined", "failed", "alone")
    before = {outcome: combined_count(outcome) for outcome in outcomes}
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    ready.wait()
    clock.extend([time.time() + WARMUP_SECONDS, time.time() + WARMUP_SECONDS + seconds])
    ready.wait()
    for thread in pool:
        thread.join()
    counted = {outcome: combined_count(outcome) - before[outcome] for outcome in outcomes}
    db.dispose()
    done, errors = sum(r[0] for r in results), sum(r[1] for r in results)
    latencies = [latency for r in results for latency in r[3]]
    figures = {
        "rate": done / seconds,
        "errors": errors,
        "p50_ms": percentile_ms(latencies, 0.50),
        "p99_ms": percentile_ms(latencies, 0.99),
        # Of all deductions in the phase (warm-up included), the share a combined statement applied.
        "combined_share": round(counted["applied"] / max(1, sum(counted.values())), 3),
    }
    problems = sorted({r[2] for r in results if r[2]})
    log(
        f"combined_hot   {figures['rate']:10.1f} tx/s  ({done} committed, {errors} failed, {threads} "
        f"threads, {seconds:g} s; p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms)"
        + "".join(f"\n    first error of a thread: {problem}" for problem in problems)
    )
    return figures


def run_phase(
    phase: str, world: World, workers: int, seconds: float
) -> tuple[float, int, list[float]]:
    """Committed transactions per second over the measured window, the failure count and the
    latencies of the committed ones."""
    ctx = mp.get_context(
        "fork"
    )  # the World is inherited, not pickled; no parent connection is open
    ready, go, out, clock = (
        ctx.Barrier(workers + 1),
        ctx.Event(),
        ctx.Queue(),
        ctx.Array("d", 2, lock=False),
    )
    procs = [
        ctx.Process(target=worker, args=(phase, n, world, ready, go, clock, out))
        for n in range(workers)
    ]
    for proc in procs:
        proc.start()
    with contextlib.suppress(
        threading.BrokenBarrierError
    ):  # a worker failed to set up: it reports below
        ready.wait(timeout=120)
    clock[0] = time.time() + WARMUP_SECONDS
    clock[1] = clock[0] + seconds
    go.set()
    results = [out.get(timeout=seconds + WARMUP_SECONDS + 120) for _ in procs]
    for proc in procs:
        proc.join()
    done, errors = sum(r[0] for r in results), sum(r[1] for r in results)
    problems = sorted({r[2] for r in results if r[2]})
    if any(p.startswith("worker setup failed") for p in problems):
        raise SystemExit(f"{phase}: {problems}")
    log(
        f"{phase:<14} {done / seconds:10.1f} tx/s  ({done} committed, {errors} failed, {workers} workers, "
        f"{seconds:g} s)"
        + "".join(f"\n    first error of a worker: {problem}" for problem in problems)
    )
    return done / seconds, errors, [latency for r in results for latency in r[3]]


def explain_order(db: warehouse.Database, world: World) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) of the deduction statement exactly as deduct_order sends it."""
    from warehouse.stock import execute as stock_execute

    captured = []
    original = stock_execute._execute

    def grab(connection, statement, bound):
        if statement == TAKE_STATEMENTS["deduction"]:
            captured.append((RENDERED[statement], dict(bound)))
        return original(connection, statement, bound)

    lines = [(sku, 1) for sku in random.Random("explain").sample(world.skus[1:], ORDER_LINES)]
    stock_execute._execute = grab
    try:
        with Session(db.engine) as s:  # run it once for real to capture the SQL and parameters
            stock.deduct_order(s, warehouse=world.warehouse, lines=lines)
            s.rollback()
    finally:
        stock_execute._execute = original
    if len(captured) != 1:
        raise RuntimeError(f"expected one deduction statement, captured {len(captured)}")
    statement, parameters = captured[0]
    with Session(db.engine) as s:
        explained = s.connection().exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters
        )
        plan = "\n".join(explained.scalars())
        s.rollback()
        seq_scans = sorted(set(re.findall(r"Seq Scan on (\S+)", plan)))
        sizes = dict(
            s.execute(
                text("SELECT relname, reltuples::bigint FROM pg_class WHERE relname = ANY(:names)"),
                {"names": seq_scans},
            ).all()
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "deduct_order_plan.txt"
    path.write_text(
        f"-- deduct_order, {ORDER_LINES} lines, warehouse {world.warehouse}, rolled back\n{plan}\n"
    )
    times = {
        label: float(ms)
        for label, ms in re.findall(r"(Planning|Execution) Time: ([\d.]+) ms", plan)
    }
    index_scans = sorted(
        set(re.findall(r"Index (?:Only )?Scan(?: Backward)? (?:using|on) (\S+)", plan))
    )
    summary = {
        "plan_execution_ms": times.get("Execution"),
        "plan_planning_ms": times.get("Planning"),
        "plan_index_scans": index_scans,
        "plan_seq_scans": {
            name: sizes.get(name) for name in seq_scans
        },  # relation -> rows it holds
        "plan_sorts": len(re.findall(r"(?:->  |^)Sort  ", plan, re.M)),
        # rows a nested loop compared and threw away: grows with lines squared when estimates are off
        "plan_max_join_filter_removed": max(
            map(int, re.findall(r"by Join Filter: (\d+)", plan)), default=0
        ),
    }
    log(
        f"deduct_order plan ({ORDER_LINES} lines): total {times.get('Execution')} ms (+{times.get('Planning')} ms "
        f"planning); index scans: {'yes, ' + ', '.join(index_scans) if index_scans else 'NONE'}; seq scans: "
        f"{summary['plan_seq_scans'] or 'none'}; sorts: {summary['plan_sorts']}; most rows removed by a join "
        f"filter: {summary['plan_max_join_filter_removed']} -> {path}"
    )
    return summary


def _median(values: list) -> float | None:
    """The median of the rounds' figures that exist (a round with no commit has no p99)."""
    found = [value for value in values if value is not None]
    return statistics.median(found) if found else None


def _ratio(measured: float, floor: float) -> float | None:
    return round(measured / floor, 4) if floor else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per phase (default 10)"
    )
    parser.add_argument(
        "--workers", type=int, default=16, help="worker processes per phase (default 16)"
    )
    parser.add_argument(
        "--spread-skus", type=int, default=10_000, help="SKUs of the spread phases (default 10000)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of every phase, floors included; each figure is its median (default 1)",
    )
    args = parser.parse_args(argv)
    url = os.environ.get("CANGFLOW_DATABASE_URL")
    if not url:
        parser.error("set CANGFLOW_DATABASE_URL to the postgresql+psycopg:// URL to benchmark")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.spread_skus < ORDER_LINES:
        parser.error(f"--spread-skus must be at least {ORDER_LINES}")

    db = warehouse.connect(url)
    schema.upgrade(db)
    started = time.time()
    world = build_world(db, args.spread_skus)
    with db.session() as s:  # autovacuum may be off or behind: plan against real statistics
        s.execute(text("ANALYZE warehouse, location, sku, lot, stock_balance"))
        version = s.execute(text("SHOW server_version")).scalar_one()
    log(
        f"setup: warehouse {world.warehouse}, 1 hot + {args.spread_skus} spread SKUs in {time.time() - started:.1f} s"
    )
    db.dispose()  # forked workers must not inherit an open connection

    runs: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    latencies: dict[str, list[float]] = defaultdict(list)
    combined_runs: list[dict] = []
    floors = {
        "pgbench_three_hot": (THREE_STATEMENTS, True),
        "pgbench_one_hot": (ONE_STATEMENT, True),
        "pgbench_three_spread": (THREE_STATEMENTS, False),
        "pgbench_one_spread": (ONE_STATEMENT, False),
        "pgbench_domain_spread": (domain_single_row_script(), False),
    }
    order_floors = {
        "pgbench_order_floor": order_draws() + ORDER_FLOOR,
        "pgbench_domain_order": domain_order_script(),
    }
    try:
        for round_number in range(1, args.repeats + 1):
            if args.repeats > 1:
                log(f"round {round_number}/{args.repeats}")
            for phase in PHASES:
                if phase in floors:
                    script, hot = floors[phase]
                    rate = pgbench_floor(
                        world, script, hot=hot, workers=args.workers, seconds=args.seconds
                    )
                    log(f"{phase:<20} {rate:10.1f} tx/s ({args.workers} clients)")
                elif phase in order_floors:
                    rate = pgbench_orders(
                        world, order_floors[phase], workers=args.workers, seconds=args.seconds
                    )
                    log(f"{phase:<20} {rate:10.1f} orders/s ({args.workers} clients)")
                else:
                    rate, failed, measured = run_phase(phase, world, args.workers, args.seconds)
                    errors[phase] += failed
                    latencies[phase].extend(measured)
                runs[phase].append(rate)
            combined_runs.append(run_combined_phase(world, args.workers, args.seconds))
            errors["combined_hot"] += combined_runs[-1]["errors"]
    finally:  # even after a failed phase, so the raw floor's ledger rows never break the invariants
        with db.session() as s:
            params = {
                "warehouse": world.warehouse,
                "location": world.location,
                "warehouse_id": world.rows[0][1],
            }
            log(
                f"gave {s.execute(text(BACKFILL_OUTBOX), params).rowcount} raw-floor operations their outbox messages"
            )
    # Each phase's median over the rounds: the floors and the domain code alike, so a ratio
    # compares medians measured in the same rounds.
    rates = {phase: statistics.median(values) for phase, values in runs.items()}
    combined = {
        figure: _median([run[figure] for run in combined_runs])
        for figure in ("rate", "p50_ms", "p99_ms", "combined_share")
    }
    plan = explain_order(db, world)
    with db.session() as s:
        violations = invariants.check(s)
    log(
        f"invariants: {len(violations)} violation(s)"
        + "".join(f"\n    {v}" for v in violations[:10])
    )
    db.dispose()

    print(
        json.dumps(
            {
                "raw_per_s_16_workers": round(rates["raw_hot"], 1),
                "deduct_per_s_16_workers": round(rates["deduct_hot"], 1),
                "ratio_to_raw_16_workers": round(rates["deduct_hot"] / rates["raw_hot"], 4)
                if rates["raw_hot"]
                else None,
                "raw_spread_per_s": round(rates["raw_spread"], 1),
                "deduct_spread_per_s": round(rates["deduct_spread"], 1),
                "spread_ratio_to_raw": round(rates["deduct_spread"] / rates["raw_spread"], 4)
                if rates["raw_spread"]
                else None,
                "pgbench_three_statements_hot_per_s": round(rates["pgbench_three_hot"], 1),
                "pgbench_one_statement_hot_per_s": round(rates["pgbench_one_hot"], 1),
                "pgbench_three_statements_spread_per_s": round(rates["pgbench_three_spread"], 1),
                "pgbench_one_statement_spread_per_s": round(rates["pgbench_one_spread"], 1),
                "ratio_to_pgbench_hot": _ratio(rates["deduct_hot"], rates["pgbench_three_hot"]),
                "ratio_to_pgbench_spread": _ratio(
                    rates["deduct_spread"], rates["pgbench_three_spread"]
                ),
                "deduct_session_per_s_16_workers": round(rates["deduct_session_hot"], 1),
                "deduct_session_spread_per_s": round(rates["deduct_session_spread"], 1),
                "ratio_session_to_pgbench_hot": _ratio(
                    rates["deduct_session_hot"], rates["pgbench_three_hot"]
                ),
                "ratio_session_to_pgbench_spread": _ratio(
                    rates["deduct_session_spread"], rates["pgbench_three_spread"]
                ),
                "deduct_hot_p50_ms": percentile_ms(latencies["deduct_hot"], 0.50),
                "deduct_hot_p99_ms": percentile_ms(latencies["deduct_hot"], 0.99),
                "combined_hot_per_s": round(combined["rate"], 1),
                "combined_hot_p50_ms": combined["p50_ms"],
                "combined_hot_p99_ms": combined["p99_ms"],
                "combined_share": combined["combined_share"],
                "ratio_combined_to_pgbench_hot": _ratio(
                    combined["rate"], rates["pgbench_three_hot"]
                ),
                "ratio_to_pgbench_one_statement_hot": _ratio(
                    rates["deduct_hot"], rates["pgbench_one_hot"]
                ),
                "ratio_to_pgbench_one_statement_spread": _ratio(
                    rates["deduct_spread"], rates["pgbench_one_spread"]
                ),
                "order_lines_per_s": round(rates["order"] * ORDER_LINES, 1),
                "order_floor_lines_per_s": round(rates["pgbench_order_floor"] * ORDER_LINES, 1),
                "ratio_order_to_sql_floor": _ratio(rates["order"], rates["pgbench_order_floor"]),
                # The domain's own statements run by pgbench: the server's share of their cost.
                "pgbench_domain_order_lines_per_s": round(
                    rates["pgbench_domain_order"] * ORDER_LINES, 1
                ),
                "pgbench_domain_spread_per_s": round(rates["pgbench_domain_spread"], 1),
                "ratio_domain_statement_to_pgbench_spread": _ratio(
                    rates["pgbench_domain_spread"], rates["pgbench_three_spread"]
                ),
                # The same statement from the leanest Python client: what is left to cangflow.
                "python_domain_spread_per_s": round(rates["python_domain_spread"], 1),
                "ratio_python_floor_to_pgbench_spread": _ratio(
                    rates["python_domain_spread"], rates["pgbench_three_spread"]
                ),
                "ratio_to_python_floor_spread": _ratio(
                    rates["deduct_spread"], rates["python_domain_spread"]
                ),
                "orders_per_s": round(rates["order"], 2),
                "order_cold_lines_per_s": round(rates["order_cold"] * ORDER_LINES, 1),
                "order_lines": ORDER_LINES,
                "seconds_per_phase": args.seconds,
                "repeats": args.repeats,
                "phase_runs": {
                    phase: [round(v, 1) for v in values] for phase, values in runs.items()
                },
                "warmup_seconds": WARMUP_SECONDS,
                "workers": args.workers,
                "spread_skus": args.spread_skus,
                "failed_transactions": dict(errors),
                "postgres_version": version,
                **plan,
                "invariant_violations": len(violations),
            }
        )
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
