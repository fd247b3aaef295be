"""The feed's rows checked whole, in SQL, over the staging table: every rule names the row,
the column and the value. Codes are compared exactly as stored: a padded or case-mangled code
is unknown, not silently fixed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.reconcile.feed import Problem, quoted

SHOWN = 50
CODE_MAX = 64
AS_OF_MAX = 40
# A quantity above this is a keying error, not stock (and keeps sums far from bigint's end).
QUANTITY_MAX = 10**12
# Clocks differ a little between the ERP and us; more than this in the future is an error.
FUTURE_SLACK = timedelta(minutes=5)

# Not 1 to 13 ASCII digits, as `quantity !~ '^[0-9]{1,13}$'` says, in a third of its time on a
# million rows (the regex was most of the fast path's first pass).
NOT_DIGITS_1_TO_13 = (
    "(quantity IS NULL OR length(quantity) NOT BETWEEN 1 AND 13"
    " OR btrim(quantity, '0123456789') <> '')"
)
# The row's key (warehouse, sku, lot; no lot and an empty one alike) as a 64-bit hash. Equal keys
# give equal hashes, so fewer distinct hashes than rows is every repeated key found; two keys
# that collide (about one feed in 37 million at a million rows) only send the feed through the
# exact query below, which then finds nothing. Counted distinct over bigints in the fast pass's
# own scan: 0.25 s on a million rows, where grouping by the three text columns was a second
# scan of 0.7 s.
KEY_HASH = "hashtextextended(warehouse || chr(31) || sku || chr(31) || coalesce(lot, ''), 0)"
# Fast path: a valid feed (the usual case) is proven valid by two cheap set-based passes (three
# or four when it books lots). Only when one of them finds something does the detailed query
# below name each problem.
_FAST_ROWS = f"""
SELECT count(*) AS rows,
       count(*) FILTER (WHERE {NOT_DIGITS_1_TO_13}
                           OR (length(quantity) = 13 AND quantity > %(quantity_max_text)s)) AS bad_quantity,
       count(*) FILTER (WHERE coalesce(warehouse, '') = '' OR coalesce(sku, '') = '') AS empty_codes,
       max(greatest(length(warehouse), length(sku), coalesce(length(lot), 0))) AS longest_code,
       count(*) FILTER (WHERE as_of IS NULL OR as_of = '') AS no_as_of,
       min(as_of) AS first_as_of, max(as_of) AS last_as_of,
       bool_or(coalesce(lot, '') <> '') AS has_lots,
       count(DISTINCT {KEY_HASH}) AS keys
FROM {{table}}
"""
# Rows whose code names nothing, counted by an anti join of the feed against the codes (one
# hash of the master table, probed once per row): a third of the time of the distinct codes
# first (a hash aggregate of the feed's 100,000 SKUs out of a million rows), and the same answer
# to the only question asked here, whether there are any. Lots only when the feed has any.
_FAST_CODES = """
SELECT (SELECT count(*) FROM {table} f WHERE NOT EXISTS (SELECT 1 FROM warehouse w WHERE w.code = f.warehouse)),
       (SELECT count(*) FROM {table} f WHERE NOT EXISTS (SELECT 1 FROM sku s WHERE s.code = f.sku))
"""
_FAST_LOTS = """
SELECT count(*) FROM {table} f
WHERE coalesce(f.lot, '') <> ''
  AND NOT EXISTS (SELECT 1 FROM lot l JOIN sku s ON s.id = l.sku_id WHERE s.code = f.sku AND l.code = f.lot)
"""
_FAST_MIXED_LOTS = """
SELECT count(*) FROM (SELECT 1 FROM {table} GROUP BY warehouse, sku
                      HAVING bool_or(coalesce(lot, '') = '') AND bool_or(coalesce(lot, '') <> '')) m
"""

_ROW_PROBLEMS = r"""
WITH r AS (
    SELECT seq - (SELECT min(seq) FROM {table}) + 1 AS row_no,
           nullif(warehouse, '') AS warehouse, nullif(sku, '') AS sku, nullif(lot, '') AS lot,
           quantity, nullif(as_of, '') AS as_of
    FROM {table}
),
first AS MATERIALIZED (SELECT nullif(as_of, '') AS as_of FROM {table} ORDER BY seq LIMIT 1),
problems AS (
    SELECT row_no, 'quantity' AS col, quantity AS value,
           CASE WHEN quantity IS NULL OR btrim(quantity) = '' THEN 'is empty'
                WHEN quantity ~ '^\s*-' THEN 'is negative'
                WHEN quantity ~ '^\s*\+?[0-9]*[.,][0-9]*\s*$' THEN 'is fractional; quantities are whole units'
                WHEN quantity !~ '^[0-9]+$' THEN 'is not a whole number'
                WHEN length(quantity) > 13 OR CAST(quantity AS numeric) > %(quantity_max)s
                    THEN 'is out of range (at most ' || %(quantity_max)s || ')'
           END AS why
    FROM r
    UNION ALL
    SELECT row_no, 'warehouse', r.warehouse,
           CASE WHEN r.warehouse IS NULL THEN 'is empty'
                WHEN length(r.warehouse) > %(code_max)s THEN 'is longer than ' || %(code_max)s || ' characters'
                ELSE 'is not a known warehouse code (codes are matched exactly)' END
    FROM r LEFT JOIN warehouse w ON w.code = r.warehouse WHERE w.id IS NULL
    UNION ALL
    SELECT row_no, 'sku', r.sku,
           CASE WHEN r.sku IS NULL THEN 'is empty'
                WHEN length(r.sku) > %(code_max)s THEN 'is longer than ' || %(code_max)s || ' characters'
                ELSE 'is not a known SKU code (codes are matched exactly)' END
    FROM r LEFT JOIN sku s ON s.code = r.sku WHERE s.id IS NULL
    UNION ALL
    SELECT row_no, 'lot', r.lot,
           CASE WHEN length(r.lot) > %(code_max)s THEN 'is longer than ' || %(code_max)s || ' characters'
                ELSE 'is not a known lot of SKU ' || r.sku END
    FROM r JOIN sku s ON s.code = r.sku LEFT JOIN lot l ON l.sku_id = s.id AND l.code = r.lot
    WHERE r.lot IS NOT NULL AND l.id IS NULL
    UNION ALL
    SELECT row_no, 'as_of', r.as_of,
           CASE WHEN r.as_of IS NULL THEN 'is empty'
                WHEN length(r.as_of) > %(as_of_max)s THEN 'is longer than ' || %(as_of_max)s || ' characters'
                ELSE 'is not an ISO-8601 timestamp with a time zone (e.g. 2026-11-26T23:59:00+08:00)' END
    FROM r
    WHERE r.as_of IS NULL OR length(r.as_of) > %(as_of_max)s
       OR r.as_of !~ '^\d{{4}}-\d{{2}}-\d{{2}}[T ]\d{{2}}:\d{{2}}(:\d{{2}}(\.\d{{1,6}})?)?(Z|[+-]\d{{2}}(:?\d{{2}})?)$'
    UNION ALL
    SELECT row_no, 'as_of', r.as_of, 'differs from row 1 (' || first.as_of || '); one feed has one as_of'
    FROM r, first
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
LIMIT %(shown)s
"""

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)$")
# The newest feed reconciled for any of this feed's warehouses (runs from before scopes were
# recorded count for every warehouse).
_LAST_RECONCILED = text("""
SELECT max(as_of) FROM reconciliation_run
WHERE status = 'done' AND id <> :run AND (warehouse_ids && CAST(:warehouses AS bigint[]) OR warehouse_ids IS NULL)
""")


def _query(session: Session, template: str, table: str, params: dict | None = None):
    cursor = raw_sql.driver(session).cursor()
    cursor.execute(template.format(table=table), params or {})
    return cursor


def check_rows(
    session: Session, run_id: int, staging: str, feed_rows: int
) -> tuple[list[Problem], int, datetime | None]:
    """(problems shown, problems in all, the feed's as_of when it is valid)."""
    if feed_rows == 0:
        return (
            [
                Problem(
                    None,
                    None,
                    None,
                    "the feed has a header but no rows (a feed never zeroes stock by omission)",
                )
            ],
            1,
            None,
        )
    table = quoted(session, staging)
    # Big sorts and hashes in memory for this transaction only; a JIT compile would cost more
    # than it saves on these one-pass queries.
    session.execute(
        text("SELECT set_config('work_mem', '256MB', true), set_config('jit', 'off', true)")
    )
    params = {
        "quantity_max": QUANTITY_MAX,
        "quantity_max_text": str(QUANTITY_MAX),
        "code_max": CODE_MAX,
        "as_of_max": AS_OF_MAX,
        "shown": SHOWN,
    }
    rows = _query(session, _FAST_ROWS, table, params).fetchone()
    total, bad_quantity, empty_codes, longest, no_as_of, first_as_of, last_as_of, has_lots, keys = (
        rows
    )
    suspect = (
        keys != total  # a key repeated (or two keys of one hash)
        or bad_quantity
        or empty_codes
        or (longest or 0) > CODE_MAX
        or no_as_of
        or first_as_of != last_as_of
        or len(first_as_of or "") > AS_OF_MAX
        or not _ISO.match(first_as_of or "")
    )
    if not suspect:
        suspect = (
            any(_query(session, _FAST_CODES, table).fetchone())
            or (has_lots and _query(session, _FAST_LOTS, table).fetchone()[0])
            or (has_lots and _query(session, _FAST_MIXED_LOTS, table).fetchone()[0])
        )
    if suspect:
        found = _query(session, _ROW_PROBLEMS, table, params).fetchall()
        if found:
            return [Problem(r[0], r[1], r[2], r[3]) for r in found], found[0][4], None
    raw = first_as_of
    try:
        as_of = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as error:
        return [Problem(1, "as_of", raw, f"is not a valid timestamp ({error})")], 1, None
    if as_of > datetime.now(UTC) + FUTURE_SLACK:
        return [Problem(1, "as_of", raw, "is in the future")], 1, None
    return [], 0, as_of


def older_than_reconciled(
    session: Session, run_id: int, as_of: datetime, warehouse_ids: list[int]
) -> Problem | None:
    """A feed older than one already reconciled for any of its warehouses would undo newer
    corrections: refused."""
    last = session.execute(_LAST_RECONCILED, {"run": run_id, "warehouses": warehouse_ids}).scalar()
    if last is not None and as_of < last:
        return Problem(
            1,
            "as_of",
            as_of.isoformat(),
            f"is older than the last reconciled feed of these warehouses ({last.isoformat()})",
        )
    return None
