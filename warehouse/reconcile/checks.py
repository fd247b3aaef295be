"""The feed's rows checked whole, in SQL, over the staging table: every rule names the row,
the column and the value. Codes are compared exactly as stored: a padded or case-mangled code
is unknown, not silently fixed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.orm import Session

from .feed import Problem

SHOWN = 50
CODE_MAX = 64
AS_OF_MAX = 40
# A quantity above this is a keying error, not stock (and keeps sums far from bigint's end).
QUANTITY_MAX = 10**12
# Clocks differ a little between the ERP and us; more than this in the future is an error.
FUTURE_SLACK = timedelta(minutes=5)

_ROW_PROBLEMS = text(r"""
WITH r AS (
    SELECT seq - (SELECT min(seq) FROM erp_feed_row WHERE run_id = :run) + 1 AS row_no,
           nullif(warehouse, '') AS warehouse, nullif(sku, '') AS sku, nullif(lot, '') AS lot,
           quantity, nullif(as_of, '') AS as_of
    FROM erp_feed_row WHERE run_id = :run
),
problems AS (
    SELECT row_no, 'quantity' AS col, quantity AS value,
           CASE WHEN quantity IS NULL OR btrim(quantity) = '' THEN 'is empty'
                WHEN quantity ~ '^\s*-' THEN 'is negative'
                WHEN quantity ~ '^\s*\+?[0-9]*[.,][0-9]*\s*$' THEN 'is fractional; quantities are whole units'
                WHEN quantity !~ '^[0-9]+$' THEN 'is not a whole number'
                WHEN length(quantity) > 13 OR CAST(quantity AS numeric) > :quantity_max
                    THEN 'is out of range (at most ' || :quantity_max || ')'
           END AS why
    FROM r
    UNION ALL
    SELECT row_no, 'warehouse', r.warehouse,
           CASE WHEN r.warehouse IS NULL THEN 'is empty'
                WHEN length(r.warehouse) > :code_max THEN 'is longer than ' || :code_max || ' characters'
                ELSE 'is not a known warehouse code (codes are matched exactly)' END
    FROM r LEFT JOIN warehouse w ON w.code = r.warehouse WHERE w.id IS NULL
    UNION ALL
    SELECT row_no, 'sku', r.sku,
           CASE WHEN r.sku IS NULL THEN 'is empty'
                WHEN length(r.sku) > :code_max THEN 'is longer than ' || :code_max || ' characters'
                ELSE 'is not a known SKU code (codes are matched exactly)' END
    FROM r LEFT JOIN sku s ON s.code = r.sku WHERE s.id IS NULL
    UNION ALL
    SELECT row_no, 'lot', r.lot,
           CASE WHEN length(r.lot) > :code_max THEN 'is longer than ' || :code_max || ' characters'
                ELSE 'is not a known lot of SKU ' || r.sku END
    FROM r JOIN sku s ON s.code = r.sku LEFT JOIN lot l ON l.sku_id = s.id AND l.code = r.lot
    WHERE r.lot IS NOT NULL AND l.id IS NULL
    UNION ALL
    SELECT row_no, 'as_of', r.as_of,
           CASE WHEN r.as_of IS NULL THEN 'is empty'
                WHEN length(r.as_of) > :as_of_max THEN 'is longer than ' || :as_of_max || ' characters'
                ELSE 'is not an ISO-8601 timestamp with a time zone (e.g. 2026-11-26T23:59:00+08:00)' END
    FROM r
    WHERE r.as_of IS NULL OR length(r.as_of) > :as_of_max
       OR r.as_of !~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)$'
    UNION ALL
    SELECT row_no, 'as_of', r.as_of, 'differs from row 1 (' || first.as_of || '); one feed has one as_of'
    FROM r, (SELECT as_of FROM r WHERE row_no = 1) AS first
    WHERE r.as_of IS DISTINCT FROM first.as_of AND r.as_of IS NOT NULL
    UNION ALL
    SELECT row_no, 'warehouse,sku,lot', concat_ws(',', warehouse, sku, lot),
           'repeats row ' || first_row || ' (one row per warehouse, sku and lot)'
    FROM (SELECT row_no, warehouse, sku, lot,
                 min(row_no) OVER (PARTITION BY warehouse, sku, coalesce(lot, '')) AS first_row FROM r) d
    WHERE row_no > first_row
    UNION ALL
    SELECT row_no, 'lot', coalesce(lot, ''),
           'SKU ' || sku || ' is booked both with and without lots in this feed; book it one way'
    FROM (SELECT row_no, sku, warehouse, lot,
                 bool_or(lot IS NULL) OVER (PARTITION BY warehouse, sku) AS some_without,
                 bool_or(lot IS NOT NULL) OVER (PARTITION BY warehouse, sku) AS some_with,
                 row_number() OVER (PARTITION BY warehouse, sku ORDER BY row_no) AS nth FROM r) m
    WHERE some_without AND some_with AND nth = 2
)
SELECT row_no, col, value, why, count(*) OVER () AS total
FROM problems WHERE why IS NOT NULL
ORDER BY row_no, col
LIMIT :shown
""")

_AS_OF = text("SELECT min(as_of) FROM erp_feed_row WHERE run_id = :run")
_LAST_RECONCILED = text("""
SELECT max(as_of) FROM reconciliation_run WHERE status = 'done' AND id <> :run
""")


def check_rows(session: Session, run_id: int, feed_rows: int) -> tuple[list[Problem], int, datetime | None]:
    """(problems shown, problems in all, the feed's as_of when it is valid)."""
    if feed_rows == 0:
        return [Problem(None, None, None, "the feed has a header but no rows (a feed never zeroes stock by omission)")], 1, None
    rows = session.execute(_ROW_PROBLEMS, {"run": run_id, "quantity_max": QUANTITY_MAX, "code_max": CODE_MAX,
                                           "as_of_max": AS_OF_MAX, "shown": SHOWN}).all()
    if rows:
        return [Problem(r.row_no, r.col, r.value, r.why) for r in rows], rows[0].total, None
    raw = session.execute(_AS_OF, {"run": run_id}).scalar()
    try:
        as_of = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as error:
        return [Problem(1, "as_of", raw, f"is not a valid timestamp ({error})")], 1, None
    if as_of > datetime.now(timezone.utc) + FUTURE_SLACK:
        return [Problem(1, "as_of", raw, "is in the future")], 1, None
    last = session.execute(_LAST_RECONCILED, {"run": run_id}).scalar()
    if last is not None and as_of < last:
        return [Problem(1, "as_of", raw, f"is older than the last reconciled feed ({last.isoformat()})")], 1, None
    return [], 0, as_of
