"""The diff, in the database: the feed's typed rows and the WMS stock as of the feed's as_of,
summed per key in one pass, with each difference's tolerance decided in the same statement.

The WMS side as of as_of is the live balance minus the movements dated after as_of: exact
(invariant 2: a balance is the sum of its movements) and cheap, since a feed's as_of is recent
and only the movements after it are read; picks in flight after the ERP's cut-off are therefore
not flagged. A feed row without a lot compares with the WMS summed over the SKU's lots; a
lot row with that lot. WMS stock of a warehouse the feed does not mention is out of scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.reconcile.feed import quoted

# Every key's ERP and WMS quantities in one hash aggregate over the feed's rows and the WMS rows
# together, each side summed apart (NULL where the side has no row: not in the feed, not in the
# WMS). A FULL JOIN needs the WMS side summed per key first (a SKU lies in several bins) and a
# hash of that built again for the join: 2.0 s on a million rows, where this is 1.4 s
# (cangflow_sum, migration 0017, keeps its sums in bigints). The feed has one row per key
# (`checks`), so its sum is its quantity.
_DIFF = """
WITH feed AS {materialized} (
    SELECT w.id AS warehouse_id, s.id AS sku_id, {lot_id} AS lot_id, CAST(f.quantity AS bigint) AS qty
    FROM {table} f
    JOIN warehouse w ON w.code = f.warehouse
    JOIN sku s ON s.code = f.sku
    {lot_join}
),
by_lot AS (SELECT DISTINCT warehouse_id, sku_id FROM feed WHERE lot_id IS NOT NULL),
as_of_rows AS (
    SELECT b.warehouse_id, b.sku_id, b.lot_id, b.on_hand AS qty
    FROM stock_balance b WHERE b.warehouse_id = ANY (%(warehouses)s)
    UNION ALL
    SELECT m.warehouse_id, m.sku_id, m.lot_id, -m.qty
    FROM stock_movement m
    WHERE m.occurred_at > %(as_of)s AND m.warehouse_id = ANY (%(warehouses)s)
),
both_sides AS (
    SELECT warehouse_id, sku_id, lot_id, qty AS erp_qty, CAST(NULL AS bigint) AS wms_qty FROM feed
    UNION ALL
    {wms}
),
summed AS (
    SELECT warehouse_id, sku_id, lot_id, cangflow_sum(erp_qty) AS erp_qty, cangflow_sum(wms_qty) AS wms_qty
    FROM both_sides GROUP BY warehouse_id, sku_id, lot_id
),
differing AS (
    SELECT warehouse_id, sku_id, lot_id, coalesce(wms_qty, 0) AS wms_qty, erp_qty,
           coalesce(erp_qty, 0) - coalesce(wms_qty, 0) AS delta,
           CASE WHEN erp_qty IS NULL THEN 'not_in_feed' WHEN wms_qty IS NULL THEN 'not_in_wms' ELSE 'differs' END AS kind
    FROM summed
    WHERE coalesce(erp_qty, 0) <> coalesce(wms_qty, 0)
),
tolerated AS (
    SELECT d.*,
           coalesce(ts.abs_qty, tc.abs_qty, %(tolerance_abs)s) AS tol_abs,
           coalesce(ts.pct, tc.pct, %(tolerance_pct)s) AS tol_pct
    FROM differing d
    JOIN sku s ON s.id = d.sku_id
    LEFT JOIN reconciliation_tolerance ts ON ts.sku_id = d.sku_id
    LEFT JOIN reconciliation_tolerance tc ON tc.category = s.category
)
INSERT INTO reconciliation_difference (run_id, warehouse_id, sku_id, lot_id, wms_qty, erp_qty, delta, kind, within_tolerance)
SELECT %(run)s, warehouse_id, sku_id, lot_id, wms_qty, erp_qty, delta, kind,
       abs(delta) <= tol_abs OR abs(delta) * 100 <= tol_pct * abs(wms_qty)
FROM tolerated
"""
# The WMS rows keyed: per lot where the feed books the SKU by lot, else summed over lots.
_WMS_BY_LOT = """
    SELECT a.warehouse_id, a.sku_id, CASE WHEN k.sku_id IS NULL THEN NULL ELSE a.lot_id END, NULL, a.qty
    FROM as_of_rows a LEFT JOIN by_lot k ON k.warehouse_id = a.warehouse_id AND k.sku_id = a.sku_id
"""
# A feed without lots (the usual case) keys by warehouse and SKU only.
_WMS_BY_SKU = """
    SELECT a.warehouse_id, a.sku_id, CAST(NULL AS bigint), NULL, a.qty FROM as_of_rows a
"""
# The diff's settings, for its transaction only: a hash aggregate of two million rows in
# memory; no JIT compile (it cost more than it saved on this one-pass statement); the feed
# hash-joined to the codes, never merge-joined after sorting a million rows (the staging table
# is never ANALYZEd, so the planner's estimates of it are guesses).
DIFF_PLANNER = {"work_mem": "256MB", "jit": "off", "enable_mergejoin": "off"}
_HAS_LOTS = "SELECT EXISTS (SELECT 1 FROM {table} WHERE coalesce(lot, '') <> '')"
_WAREHOUSES = "SELECT array_agg(w.id) FROM (SELECT DISTINCT warehouse FROM {table}) f JOIN warehouse w ON w.code = f.warehouse"

# Open lines of earlier runs whose difference this run's feed covered and found gone (ERP and
# WMS agree now): obsolete, so nobody approves or sends them. A difference found again is
# superseded by the new run's line instead (`orders.make_orders`). The open lines are gathered
# first and meet the feed in one hash join: lines the ERP has not acknowledged pile up night
# after night, and probing the unindexed feed once per line scanned a million-row feed once for
# each of them (1,000 open lines: minutes).
_AGREED_NOW = """
WITH open_lines AS MATERIALIZED (
    SELECT l.id, w.code AS warehouse, s.code AS sku, coalesce(lot.code, '') AS lot
    FROM adjustment_order_line l
    JOIN adjustment_order o ON o.id = l.order_id
    JOIN warehouse w ON w.id = l.warehouse_id
    JOIN sku s ON s.id = l.sku_id
    LEFT JOIN lot ON lot.id = l.lot_id
    WHERE l.status IN ('pending_approval', 'held', 'for_erp') AND o.run_id <> %(run)s
      AND l.warehouse_id = ANY (%(warehouses)s)
      AND NOT EXISTS (SELECT 1 FROM reconciliation_difference d WHERE d.run_id = %(run)s AND d.warehouse_id = l.warehouse_id
                      AND d.sku_id = l.sku_id AND d.lot_id IS NOT DISTINCT FROM l.lot_id)
),
agreed AS (
    SELECT DISTINCT o.id FROM open_lines o
    JOIN {table} f ON f.warehouse = o.warehouse AND f.sku = o.sku AND coalesce(f.lot, '') = o.lot
)
UPDATE adjustment_order_line l SET status = 'superseded', superseded_by_run = %(run)s,
       reason = l.reason || '; run ' || %(run)s || ' found the ERP and the WMS agree'
FROM agreed a
WHERE l.id = a.id
"""

# The open lines' estimate is a guess (a materialized CTE): a nested loop over it would read the
# feed once per line, so _AGREED_NOW runs with the planner allowed to hash only.
AGREED_NOW_PLANNER = {"enable_nestloop": "off"}


def supersede_agreed(
    cursor: psycopg.Cursor, table: str, run_id: int, warehouses: list[int]
) -> None:
    """Run _AGREED_NOW under AGREED_NOW_PLANNER, restoring the transaction's own settings after."""
    names = list(AGREED_NOW_PLANNER)
    previous = cursor.execute(
        "SELECT " + ", ".join(f"current_setting('{name}')" for name in names)
    ).fetchone()
    assert previous is not None  # a SELECT without FROM: one row
    for name, value in AGREED_NOW_PLANNER.items():
        cursor.execute("SELECT set_config(%s, %s, true)", (name, value))
    try:
        cursor.execute(_AGREED_NOW.format(table=table), {"run": run_id, "warehouses": warehouses})
    finally:
        for name, value in zip(names, previous, strict=True):
            cursor.execute("SELECT set_config(%s, %s, true)", (name, value))


_COUNTS = text("""
SELECT count(*) AS differences,
       count(*) FILTER (WHERE within_tolerance) AS within_tolerance,
       count(*) FILTER (WHERE kind = 'not_in_feed') AS not_in_feed
FROM reconciliation_difference WHERE run_id = :run
""")


@dataclass(frozen=True)
class Compared:
    rows_compared: int
    differences: int
    within_tolerance: int
    not_in_feed: int


def compare(
    session: Session,
    run_id: int,
    staging: str,
    *,
    as_of: datetime,
    tolerance_abs: int,
    tolerance_pct: float,
    feed_rows: int,
    warehouse_ids: list[int] | None = None,
) -> Compared:
    """Write the run's differences (a redo replaces them)."""
    session.execute(
        text("DELETE FROM reconciliation_difference WHERE run_id = :run"), {"run": run_id}
    )
    for name, value in DIFF_PLANNER.items():
        session.execute(
            text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value}
        )
    table = quoted(session, staging)
    cursor = raw_sql.driver(session).cursor()
    try:
        warehouses = warehouse_ids
        if warehouses is None:  # the feed's scope, when the caller has not measured it
            scope = cursor.execute(_WAREHOUSES.format(table=table)).fetchone()
            assert scope is not None  # an aggregate without GROUP BY: one row
            warehouses = scope[0] or []
        lots = cursor.execute(_HAS_LOTS.format(table=table)).fetchone()
        assert lots is not None  # SELECT EXISTS (...): one row
        has_lots = lots[0]
        statement = _DIFF.format(
            table=table,
            lot_id="l.id" if has_lots else "CAST(NULL AS bigint)",
            lot_join="LEFT JOIN lot l ON l.sku_id = s.id AND l.code = nullif(f.lot, '')"
            if has_lots
            else "",
            wms=_WMS_BY_LOT if has_lots else _WMS_BY_SKU,
            # Read twice (lots) it is materialized; read once, inlined into the join.
            materialized="MATERIALIZED" if has_lots else "NOT MATERIALIZED",
        )
        cursor.execute(
            statement,
            {
                "run": run_id,
                "as_of": as_of,
                "warehouses": warehouses,
                "tolerance_abs": tolerance_abs,
                "tolerance_pct": tolerance_pct,
            },
        )
        supersede_agreed(cursor, table, run_id, warehouses)
    finally:
        cursor.close()
    counts = session.execute(_COUNTS, {"run": run_id}).one()
    return Compared(feed_rows, counts.differences, counts.within_tolerance, counts.not_in_feed)
