"""The SQL of the stock operations: each operation is one statement, built from a head that
locks and changes balance rows and a shared tail that writes the ledger, the outbox message
and the idempotency result.

Why one statement: the balance rows are locked from the statement until COMMIT, so the hot
row's lock is held for one round trip (the commit) instead of one per write. Why the shape:
- rows are locked with `SELECT ... ORDER BY id FOR UPDATE` (LockRows above Sort), so any two
  operations take their locks in the same order and cannot deadlock;
- FOR UPDATE returns the latest committed version of each row (waiting for a concurrent
  writer to finish), so every check below reads current values, and the UPDATE then changes
  rows this transaction already holds;
- the UPDATEs of the locking heads set values computed from the locked rows the plan carries
  (`rt.on_hand - rt.qty`), never from the UPDATE's own `b`, and repeat no value guard in their
  WHERE. Within one READ COMMITTED statement the UPDATE reads `b` as of the statement's
  snapshot: when a receipt committed while the FOR UPDATE above waited for its lock, `b` still
  holds the pre-receipt version, so a guard on it skipped a row the plan had rightly approved
  ("planned 1 rows but changed 0"), and arithmetic on it formed a row (5 - 8 = -3) that the
  CHECK constraints refuse before PostgreSQL moves on to the latest version (a spurious
  CheckViolation; tests/integration/test_interleavings.py shows both). For the same reason
  every such UPDATE sets both on_hand and reserved: a column it leaves out is the snapshot's
  in the row the CHECKs test (a pick next to a committed reservation). The CHECK constraints
  stay the last line: a head that planned wrong fails loudly, never writes a negative;
- arrays go in through `unnest(...)`, so the SQL text is constant and prepared once.

A head defines the CTEs `verdict(ok)`, `problems` (json rows explaining a refusal),
`planned(rows)` and `changed` (the updated balance rows with their deltas). A single-line take
is first tried by `_SINGLE_ROW_TAKE`, which locks nothing before its one guarded write (see
there). Only constant SQL is formatted in here; every value is a bound parameter.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg as psycopg_dialect

from warehouse.stock.validation import MAX_BALANCE

# The outbox topic of every stock change (the cache's invalidator and the ERP read it).
STOCK_TOPIC = "stock.changed"
AVAILABLE = "{t}.on_hand - {t}.reserved"
RESERVED = "{t}.reserved"

# What taking `rt.qty` from a row does to it, per operation that allocates.
TAKE_MODES = {
    "deduction": {
        "source": AVAILABLE,
        "set": "on_hand = {t}.on_hand - rt.qty",
        "other": "reserved = {t}.reserved",
        "on_hand_delta": "-rt.qty",
        "reserved_delta": "0",
    },
    "reservation": {
        "source": AVAILABLE,
        "set": "reserved = {t}.reserved + rt.qty",
        "other": "on_hand = {t}.on_hand",
        "on_hand_delta": "0",
        "reserved_delta": "rt.qty",
    },
    "release": {
        "source": RESERVED,
        "set": "reserved = {t}.reserved - rt.qty",
        "other": "on_hand = {t}.on_hand",
        "on_hand_delta": "0",
        "reserved_delta": "-rt.qty",
    },
}

_TAKE_HEAD = """
WITH req AS (
    SELECT r.line_no, r.sku_id, r.location_id, r.lot_id, r.qty
    FROM unnest(CAST(:sku_ids AS bigint[]), CAST(:location_ids AS bigint[]),
                CAST(:lot_ids AS bigint[]), CAST(:qtys AS bigint[]))
         WITH ORDINALITY AS r(sku_id, location_id, lot_id, qty, line_no)
),
stocked AS MATERIALIZED (
    SELECT b.id, b.sku_id, b.location_id, b.lot_id, b.on_hand, b.reserved, b.version, b.first_received_at
    FROM stock_balance b
    WHERE b.warehouse_id = :warehouse_id
      AND b.sku_id = ANY (CAST(:sku_ids AS bigint[]))
      AND {source_b} > 0
      AND EXISTS (
          SELECT 1 FROM req
          WHERE req.sku_id = b.sku_id
            AND (req.location_id IS NULL OR req.location_id = b.location_id)
            AND (req.lot_id IS NULL OR req.lot_id = b.lot_id))
    ORDER BY b.id
    FOR UPDATE OF b
),
cand AS (
    -- FEFO: earliest expiry first (no expiry last), then oldest receipt, then row id.
    SELECT req.line_no, req.qty AS asked, l.id, l.sku_id, l.location_id, l.lot_id, l.on_hand, l.reserved,
           l.version, {source_l} AS avail,
           CAST(sum({source_l}) OVER (PARTITION BY req.line_no
                                 ORDER BY lot.expires NULLS LAST, l.first_received_at, l.id) AS bigint) AS upto
    FROM req
    JOIN stocked l ON l.sku_id = req.sku_id
                 AND (req.location_id IS NULL OR l.location_id = req.location_id)
                 AND (req.lot_id IS NULL OR l.lot_id = req.lot_id)
    LEFT JOIN lot ON lot.id = l.lot_id
),
take AS (
    SELECT line_no, id, sku_id, location_id, lot_id, on_hand, reserved, version, avail,
           LEAST(avail, asked - (upto - avail)) AS qty
    FROM cand WHERE upto - avail < asked
),
-- What each row gives up in total; `avail` is the row's own, the same on every line that takes it.
row_take AS (
    SELECT id, sku_id, location_id, lot_id, on_hand, reserved, version, avail, CAST(sum(qty) AS bigint) AS qty
    FROM take GROUP BY id, sku_id, location_id, lot_id, on_hand, reserved, version, avail
),
short AS (
    SELECT req.line_no, req.sku_id, req.location_id, req.lot_id, req.qty AS asked,
           coalesce(max(cand.upto), 0) AS available
    FROM req LEFT JOIN cand ON cand.line_no = req.line_no
    GROUP BY req.line_no, req.sku_id, req.location_id, req.lot_id, req.qty
    HAVING coalesce(max(cand.upto), 0) < req.qty
    UNION ALL
    -- Two lines whose filters overlap (one naming a bin, one not) may plan the same row twice.
    SELECT NULL, sku_id, location_id, lot_id, qty, avail FROM row_take WHERE qty > avail
),
problems AS (SELECT to_jsonb(short) AS problem FROM short),
verdict AS MATERIALIZED (SELECT NOT EXISTS (SELECT 1 FROM short) AS ok),
planned AS (SELECT count(*) AS rows FROM row_take),
changed AS (
    UPDATE stock_balance b
    SET {locked_set_clause}, version = rt.version + 1, updated_at = now()
    FROM row_take rt, verdict
    WHERE verdict.ok AND b.id = rt.id
    RETURNING b.id AS balance_id, b.warehouse_id, b.location_id, b.sku_id, b.lot_id,
              {on_hand_delta} AS on_hand_delta, {reserved_delta} AS reserved_delta,
              CAST('{movement_type}' AS varchar) AS movement_type,
              b.on_hand, b.reserved, b.version
)
"""

# Explicit signed deltas on named rows (receive, adjust, transfer). Rows must exist already:
# the caller inserts missing ones first (`ENSURE_ROWS`), since rows inserted by a CTE are
# invisible to the rest of the statement.
_DELTA_HEAD = """
WITH req AS (
    SELECT * FROM unnest(CAST(:location_ids AS bigint[]), CAST(:sku_ids AS bigint[]),
                         CAST(:lot_ids AS bigint[]), CAST(:on_hand_deltas AS bigint[]),
                         CAST(:reserved_deltas AS bigint[]), CAST(:movement_types AS varchar[]))
         AS r(location_id, sku_id, lot_id, on_hand_delta, reserved_delta, movement_type)
),
locked AS MATERIALIZED (
    SELECT b.id, b.location_id, b.sku_id, b.lot_id, b.on_hand, b.reserved, b.version
    FROM stock_balance b
    WHERE b.warehouse_id = :warehouse_id
      AND EXISTS (SELECT 1 FROM req
                  WHERE req.location_id = b.location_id AND req.sku_id = b.sku_id
                    AND req.lot_id IS NOT DISTINCT FROM b.lot_id)
    ORDER BY b.id
    FOR UPDATE OF b
),
plan AS (
    SELECT req.*, l.id AS balance_id, coalesce(l.on_hand, 0) AS on_hand,
           coalesce(l.reserved, 0) AS reserved, l.version
    FROM req LEFT JOIN locked l
      ON l.location_id = req.location_id AND l.sku_id = req.sku_id
     AND l.lot_id IS NOT DISTINCT FROM req.lot_id
),
bad AS (
    SELECT sku_id, location_id, lot_id, -on_hand_delta AS asked, on_hand - reserved AS available,
           on_hand > {max_balance} - on_hand_delta AS too_much
    FROM plan
    WHERE balance_id IS NULL
       OR on_hand + on_hand_delta < 0
       OR reserved + reserved_delta < 0
       OR reserved + reserved_delta > on_hand + on_hand_delta
       OR on_hand > {max_balance} - on_hand_delta  -- written so that the test itself cannot overflow
),
problems AS (SELECT to_jsonb(bad) AS problem FROM bad),
verdict AS MATERIALIZED (SELECT NOT EXISTS (SELECT 1 FROM bad) AS ok),
planned AS (SELECT count(*) AS rows FROM plan),
changed AS (
    UPDATE stock_balance b
    SET on_hand = p.on_hand + p.on_hand_delta, reserved = p.reserved + p.reserved_delta,
        version = p.version + 1, updated_at = now()
    FROM plan p, verdict
    WHERE verdict.ok AND b.id = p.balance_id
    RETURNING b.id AS balance_id, b.warehouse_id, b.location_id, b.sku_id, b.lot_id,
              p.on_hand_delta, p.reserved_delta, p.movement_type,
              b.on_hand, b.reserved, b.version
)
"""

# A cycle count: the counted rows of one location locked in key order, each set to its count.
# A count below the reserved quantity cuts the reservation (the shelf is the truth), and the
# cut shows in the movement's reserved_qty and in the result.
_COUNT_HEAD = """
WITH req AS (
    SELECT * FROM unnest(CAST(:sku_ids AS bigint[]), CAST(:lot_ids AS bigint[]),
                         CAST(:counted AS bigint[])) AS r(sku_id, lot_id, counted)
),
locked AS MATERIALIZED (
    SELECT b.id, b.sku_id, b.lot_id, b.on_hand, b.reserved, b.version
    FROM stock_balance b
    WHERE b.warehouse_id = :warehouse_id AND b.location_id = :location_id
      AND (CAST(:complete AS boolean)
           OR EXISTS (SELECT 1 FROM req WHERE req.sku_id = b.sku_id
                                          AND req.lot_id IS NOT DISTINCT FROM b.lot_id))
    ORDER BY b.id
    FOR UPDATE OF b
),
plan AS (
    SELECT l.id AS balance_id, l.on_hand, l.reserved, l.version,
           coalesce(req.counted, 0) - l.on_hand AS on_hand_delta,
           LEAST(0, coalesce(req.counted, 0) - l.reserved) AS reserved_delta
    FROM locked l LEFT JOIN req ON req.sku_id = l.sku_id AND req.lot_id IS NOT DISTINCT FROM l.lot_id
),
problems AS (SELECT NULL::jsonb AS problem WHERE false),
verdict AS MATERIALIZED (SELECT true AS ok),
planned AS (SELECT count(*) AS rows FROM plan WHERE on_hand_delta <> 0 OR reserved_delta <> 0),
changed AS (
    UPDATE stock_balance b
    SET on_hand = p.on_hand + p.on_hand_delta, reserved = p.reserved + p.reserved_delta,
        version = p.version + 1, updated_at = now()
    FROM plan p
    WHERE b.id = p.balance_id AND (p.on_hand_delta <> 0 OR p.reserved_delta <> 0)
    RETURNING b.id AS balance_id, b.warehouse_id, b.location_id, b.sku_id, b.lot_id,
              p.on_hand_delta, p.reserved_delta, CAST('count' AS varchar) AS movement_type,
              b.on_hand, b.reserved, b.version
)
"""

# How a statement records its result under the request's idempotency key. On the session path
# `idempotency.claim` inserted the key row before the statement ran (so a concurrent repeat
# waits on it), and the statement fills in the result. On the direct path (`stock.direct`) the
# statement inserts the row itself, with its result, once the change is applied: a key some
# earlier request holds fails that INSERT (a unique violation) and the whole statement with it,
# and the direct path then hands the request to the session path, which replays.
_KEYED_CLAIMED = """keyed AS (
    UPDATE idempotency_key k
    SET operation_id = op.id, result = coalesce(summary.items, '[]'::jsonb)
    FROM op, summary{verdict_from}
    WHERE {verdict_ok}k.key = CAST(:key AS text)
    RETURNING k.key
)"""
_KEYED_INSERTED = """keyed AS (
    INSERT INTO idempotency_key (key, operation, request_hash, operation_id, result)
    SELECT CAST(:key AS text), CAST(:operation AS varchar), CAST(:digest AS varchar), op.id,
           coalesce(summary.items, '[]'::jsonb)
    FROM op, summary{verdict_from}
    WHERE {verdict_ok}CAST(:key AS text) IS NOT NULL
    RETURNING key
)"""
# A single-row take has no verdict: its `summary` is empty when it changed nothing.
_NO_VERDICT = {"verdict_from": "", "verdict_ok": ""}
_VERDICT = {"verdict_from": ", verdict", "verdict_ok": "verdict.ok AND "}


def _keyed(*, direct: bool, verdict: bool) -> str:
    return (_KEYED_INSERTED if direct else _KEYED_CLAIMED).format(
        **(_VERDICT if verdict else _NO_VERDICT)
    )


_TAIL = """
, op AS MATERIALIZED (SELECT nextval('stock_operation_id_seq') AS id)
-- Movement ids drawn here so the summary reads them without joining the INSERT's output back
-- to `changed` (a join the planner estimates at one row and runs as a quadratic nested loop),
-- in a fixed order: what leaves a row before what arrives (a transfer's out, then its in), then
-- by row. The UPDATE returns its rows in whatever order its plan met them.
, numbered AS MATERIALIZED (
    SELECT nextval('stock_movement_id_seq') AS movement_id, c.*
    FROM (SELECT * FROM changed ORDER BY on_hand_delta, reserved_delta, balance_id) c
)
, moved AS (
    INSERT INTO stock_movement (id, occurred_at, movement_type, operation_id, balance_id, warehouse_id,
                                location_id, sku_id, lot_id, qty, reserved_qty, reference, reason,
                                idempotency_key)
    SELECT n.movement_id, CAST(:occurred_at AS timestamptz), n.movement_type, op.id, n.balance_id,
           n.warehouse_id, n.location_id, n.sku_id, n.lot_id, n.on_hand_delta, n.reserved_delta,
           CAST(:reference AS text), CAST(:reason AS text), CAST(:key AS text)
    FROM numbered n CROSS JOIN op
    RETURNING 1
)
, summary AS (
    SELECT jsonb_agg(jsonb_build_object(
               'movement_id', n.movement_id, 'movement_type', n.movement_type, 'sku', s.code,
               'location', loc.code, 'lot', lot.code, 'qty', n.on_hand_delta,
               'reserved_qty', n.reserved_delta, 'on_hand', n.on_hand, 'reserved', n.reserved,
               'version', n.version)
           ORDER BY n.movement_id) AS items
    FROM numbered n
    JOIN sku s ON s.id = n.sku_id
    JOIN location loc ON loc.id = n.location_id
    LEFT JOIN lot ON lot.id = n.lot_id
)
, box AS (
    INSERT INTO outbox_message (topic, message_key, operation_id, payload)
    SELECT '{topic}', CAST(:warehouse AS text), op.id,
           jsonb_build_object('operation', CAST(:operation AS text), 'operation_id', op.id,
                              'warehouse', CAST(:warehouse AS text), 'key', CAST(:key AS text),
                              'reference', CAST(:reference AS text),
                              'occurred_at', CAST(:occurred_at AS timestamptz),
                              'items', summary.items)
    FROM op, summary
    WHERE summary.items IS NOT NULL
    RETURNING id
)
, {keyed}
SELECT verdict.ok, op.id AS operation_id, coalesce(summary.items, '[]'::jsonb) AS items,
       (SELECT coalesce(jsonb_agg(problem), '[]'::jsonb) FROM problems) AS problems,
       counted.planned_rows, counted.moved_rows,
       -- A change of other rows than planned fails the statement (never expected: a plan
       -- made on locked rows), so that it can be its own transaction (migration 0016).
       CASE WHEN verdict.ok AND counted.moved_rows <> counted.planned_rows
            THEN cangflow_statement_failed(format('%s: planned %s balance rows but changed %s',
                 CAST(:operation AS text), counted.planned_rows, counted.moved_rows))
       END AS failed
FROM verdict, op, summary,
     (SELECT (SELECT rows FROM planned) AS planned_rows, (SELECT count(*) FROM moved) AS moved_rows) AS counted
"""


def _tail(*, direct: bool) -> str:
    return _TAIL.format(topic=STOCK_TOPIC, keyed=_keyed(direct=direct, verdict=True))


def take_statement(movement_type: str, *, direct: bool = False) -> str:
    """The allocating statement: every candidate row locked in key order, then the FEFO plan
    made on current values, so it always applies or refuses truthfully, for any number of lines."""
    mode = TAKE_MODES[movement_type]
    head = _TAKE_HEAD.format(
        source_b=mode["source"].format(t="b"),
        source_l=mode["source"].format(t="l"),
        # Both columns the CHECKs read, from the locked row: a column left out is taken from the
        # UPDATE's own (snapshot) version when PostgreSQL checks the new row.
        locked_set_clause=f"{mode['set'].format(t='rt')}, {mode['other'].format(t='rt')}",
        on_hand_delta=mode["on_hand_delta"],
        reserved_delta=mode["reserved_delta"],
        movement_type=movement_type,
    )
    return head + _tail(direct=direct)


# The common case of one line whose first FEFO row alone covers it, as the atomic guarded
# update: the row is chosen on the statement's snapshot without locks, and one UPDATE
# `... WHERE available >= qty` takes its lock just to write. Nothing runs under the hot row's
# lock but the write itself, the ledger row, the outbox message and the commit. When the first
# row does not cover the line (FEFO then needs two rows) or the guard loses a race, the
# statement writes nothing (no items) and the caller runs the locking statement.
# The first row FEFO takes an item from, chosen on the statement's snapshot without locks.
_FIRST_ROW = """item AS MATERIALIZED (
    -- Codes are looked up here, not in a round trip before: an unknown code finds no row, the
    -- statement declines, and the caller's lookup before the locking statement names it.
    SELECT w.id AS warehouse_id, s.id AS sku_id,
           (SELECT l.id FROM location l WHERE l.warehouse_id = w.id AND l.code = CAST(:location AS text)) AS location_id,
           (SELECT t.id FROM lot t WHERE t.sku_id = s.id AND t.code = CAST(:lot AS text)) AS lot_id
    FROM warehouse w, sku s
    WHERE w.code = CAST(:warehouse AS text) AND s.code = CAST(:sku AS text)
),
pick AS MATERIALIZED (
    SELECT b.id FROM item JOIN stock_balance b ON b.warehouse_id = item.warehouse_id AND b.sku_id = item.sku_id
    LEFT JOIN lot ON lot.id = b.lot_id
    WHERE (CAST(:location AS text) IS NULL OR b.location_id = item.location_id)
      AND (CAST(:lot AS text) IS NULL OR b.lot_id = item.lot_id)
      AND {source_b} > 0
    ORDER BY lot.expires NULLS LAST, b.first_received_at, b.id
    LIMIT 1
),
"""

_SINGLE_ROW_TAKE = """
WITH {first_row}changed AS (
    UPDATE stock_balance b
    SET {set_clause}, version = b.version + 1, updated_at = now()
    FROM (SELECT pick.id, CAST(:qty AS bigint) AS qty FROM pick) rt
    WHERE b.id = rt.id AND {source_b} >= rt.qty
    RETURNING b.id, b.warehouse_id, b.location_id, b.sku_id, b.lot_id, b.on_hand, b.reserved, b.version,
              {on_hand_delta} AS on_hand_delta, {reserved_delta} AS reserved_delta
),
op AS MATERIALIZED (
    SELECT nextval('stock_operation_id_seq') AS id, nextval('stock_movement_id_seq') AS movement_id
),
moved AS (
    INSERT INTO stock_movement (id, occurred_at, movement_type, operation_id, balance_id, warehouse_id,
                                location_id, sku_id, lot_id, qty, reserved_qty, reference, reason,
                                idempotency_key)
    SELECT op.movement_id, CAST(:occurred_at AS timestamptz), '{movement_type}', op.id, c.id,
           c.warehouse_id, c.location_id, c.sku_id, c.lot_id, c.on_hand_delta, c.reserved_delta,
           CAST(:reference AS text), CAST(:reason AS text), CAST(:key AS text)
    FROM changed c, op
    RETURNING 1
),
summary AS (
    SELECT jsonb_build_array(jsonb_build_object(
               'movement_id', op.movement_id, 'movement_type', '{movement_type}', 'sku', CAST(:sku AS text),
               'location', (SELECT code FROM location WHERE id = c.location_id),
               'lot', (SELECT code FROM lot WHERE id = c.lot_id), 'qty', c.on_hand_delta,
               'reserved_qty', c.reserved_delta, 'on_hand', c.on_hand, 'reserved', c.reserved,
               'version', c.version)) AS items
    FROM changed c, op
),
box AS (
    INSERT INTO outbox_message (topic, message_key, operation_id, payload)
    SELECT '{topic}', CAST(:warehouse AS text), op.id,
           jsonb_build_object('operation', CAST(:operation AS text), 'operation_id', op.id,
                              'warehouse', CAST(:warehouse AS text), 'key', CAST(:key AS text),
                              'reference', CAST(:reference AS text),
                              'occurred_at', CAST(:occurred_at AS timestamptz), 'items', summary.items)
    FROM summary, op
    RETURNING 1
),
{keyed}
SELECT op.id AS operation_id, items FROM op LEFT JOIN summary ON true
"""


def single_row_take_statement(movement_type: str, *, direct: bool = False) -> str:
    mode = TAKE_MODES[movement_type]
    return _SINGLE_ROW_TAKE.format(
        first_row=_FIRST_ROW.format(source_b=mode["source"].format(t="b")),
        source_b=mode["source"].format(t="b"),
        set_clause=mode["set"].format(t="b"),
        on_hand_delta=mode["on_hand_delta"],
        reserved_delta=mode["reserved_delta"],
        movement_type=movement_type,
        topic=STOCK_TOPIC,
        keyed=_keyed(direct=direct, verdict=False),
    )


# Deductions of one item gathered from concurrent callers (`warehouse.stock.combining`), applied
# to its first FEFO row as one statement: the row is locked once and changed once, and each
# request, in arrival order, applies while the running sum of the quantities fits what the
# locked row has available; each one applied gets its own operation, ledger line, outbox message
# and key. The rest are declined (not refused): their callers run them alone, where FEFO may
# spread them over rows or refuse them truthfully. A request whose key is held already is left
# out too (the caller's own path replays it); a key committed by another request while this
# statement ran fails the whole statement (a unique violation), and every request runs alone.
# As in the locking heads, every value written comes from the locked row, never the UPDATE's own.
_COMBINED_DEDUCTION = """
WITH req AS (
    SELECT * FROM unnest(CAST(:qtys AS bigint[]), CAST(:keys AS text[]), CAST(:digests AS text[]),
                         CAST(:references AS text[]), CAST(:occurred AS timestamptz[]))
         WITH ORDINALITY AS r(qty, key, digest, reference, occurred_at, ord)
),
{first_row}
locked AS MATERIALIZED (
    SELECT b.id, b.warehouse_id, b.location_id, b.sku_id, b.lot_id, b.on_hand, b.reserved, b.version
    FROM stock_balance b JOIN pick ON pick.id = b.id
    FOR UPDATE OF b
),
fresh AS (
    SELECT req.* FROM req
    WHERE req.key IS NULL OR NOT EXISTS (SELECT 1 FROM idempotency_key k WHERE k.key = req.key)
),
running AS (
    SELECT fresh.*, CAST(sum(fresh.qty) OVER (ORDER BY fresh.ord) AS bigint) AS upto,
           row_number() OVER (ORDER BY fresh.ord) AS nth
    FROM fresh
),
fits AS MATERIALIZED (
    SELECT r.ord, r.qty, r.key, r.digest, r.reference, r.occurred_at, l.id AS balance_id,
           l.warehouse_id, l.location_id, l.sku_id, l.lot_id, l.on_hand - r.upto AS on_hand,
           l.reserved, l.version + r.nth AS version,
           nextval('stock_operation_id_seq') AS operation_id,
           nextval('stock_movement_id_seq') AS movement_id
    FROM running r, locked l
    WHERE r.upto <= l.on_hand - l.reserved
),
changed AS (
    UPDATE stock_balance b
    SET on_hand = l.on_hand - t.total, reserved = l.reserved, version = l.version + t.n,
        updated_at = now()
    FROM locked l, (SELECT CAST(sum(qty) AS bigint) AS total, count(*) AS n FROM fits) t
    WHERE b.id = l.id AND t.n > 0
    RETURNING 1
),
moved AS (
    INSERT INTO stock_movement (id, occurred_at, movement_type, operation_id, balance_id, warehouse_id,
                                location_id, sku_id, lot_id, qty, reserved_qty, reference, reason,
                                idempotency_key)
    SELECT f.movement_id, f.occurred_at, 'deduction', f.operation_id, f.balance_id, f.warehouse_id,
           f.location_id, f.sku_id, f.lot_id, -f.qty, 0, f.reference, NULL, f.key
    FROM fits f
    RETURNING 1
),
summary AS MATERIALIZED (
    SELECT f.ord, f.operation_id, f.key, f.digest, f.reference, f.occurred_at,
           jsonb_build_array(jsonb_build_object(
               'movement_id', f.movement_id, 'movement_type', 'deduction', 'sku', CAST(:sku AS text),
               'location', (SELECT code FROM location WHERE id = f.location_id),
               'lot', (SELECT code FROM lot WHERE id = f.lot_id), 'qty', -f.qty,
               'reserved_qty', 0, 'on_hand', f.on_hand, 'reserved', f.reserved,
               'version', f.version)) AS items
    FROM fits f
),
box AS (
    INSERT INTO outbox_message (topic, message_key, operation_id, payload)
    SELECT '{topic}', CAST(:warehouse AS text), s.operation_id,
           jsonb_build_object('operation', CAST(:operation AS text), 'operation_id', s.operation_id,
                              'warehouse', CAST(:warehouse AS text), 'key', s.key,
                              'reference', s.reference, 'occurred_at', s.occurred_at,
                              'items', s.items)
    FROM summary s
    RETURNING 1
),
keyed AS (
    INSERT INTO idempotency_key (key, operation, request_hash, operation_id, result)
    SELECT s.key, CAST(:operation AS varchar), s.digest, s.operation_id, s.items
    FROM summary s
    WHERE s.key IS NOT NULL
    RETURNING 1
)
SELECT s.ord, s.operation_id, s.items FROM summary s ORDER BY s.ord
"""
COMBINED_DEDUCTION = _COMBINED_DEDUCTION.format(
    first_row=_FIRST_ROW.format(source_b=TAKE_MODES["deduction"]["source"].format(t="b")),
    topic=STOCK_TOPIC,
)

DELTA_STATEMENT = _DELTA_HEAD.format(max_balance=MAX_BALANCE) + _tail(direct=False)
COUNT_STATEMENT = _COUNT_HEAD + _tail(direct=False)
TAKE_STATEMENTS = {movement_type: take_statement(movement_type) for movement_type in TAKE_MODES}
SINGLE_ROW_TAKE_STATEMENTS = {
    movement_type: single_row_take_statement(movement_type) for movement_type in TAKE_MODES
}
# The same statements for the direct path (`warehouse.stock.direct`): they claim the key themselves.
DIRECT_TAKE_STATEMENTS = {
    movement_type: take_statement(movement_type, direct=True) for movement_type in TAKE_MODES
}
DIRECT_SINGLE_ROW_TAKE_STATEMENTS = {
    movement_type: single_row_take_statement(movement_type, direct=True)
    for movement_type in TAKE_MODES
}


_COMMENT = re.compile(r"--[^\n]*")


def _render(statement: str) -> str:
    """The statement with psycopg's %(name)s placeholders, rendered once at import, without its
    comments and runs of whitespace: psycopg caches its parse of a query only up to 4,096
    characters and parses a longer one again on every call (the single-row and combined
    statements fit now; the allocating ones, ~4,800, still do not)."""
    rendered = str(text(statement).compile(dialect=psycopg_dialect()))
    # Every comment here reads "-- words". Anything else starting with "--" (a template that put
    # "-" before a negative value) would swallow the rest of the statement once its lines are
    # joined, so it stops the import instead.
    odd = [found for found in _COMMENT.findall(rendered) if not found.startswith("-- ")]
    if odd:
        raise ValueError(f"a stock statement holds '--' outside a comment: {odd[0]!r}")
    return re.sub(r"\s+", " ", _COMMENT.sub("", rendered)).strip()


# Built once: compiling a text() of this size costs ~0.1 ms per call on the hot path.
RENDERED: dict[str, str] = {
    statement: _render(statement)
    for statement in (
        DELTA_STATEMENT,
        COUNT_STATEMENT,
        *TAKE_STATEMENTS.values(),
        *SINGLE_ROW_TAKE_STATEMENTS.values(),
        *DIRECT_TAKE_STATEMENTS.values(),
        *DIRECT_SINGLE_ROW_TAKE_STATEMENTS.values(),
        COMBINED_DEDUCTION,
    )
}

# Balance rows that a receipt or count may need; ON CONFLICT DO NOTHING takes no lock on rows
# that exist, and first_received_at of an existing row stays as it was (FEFO's tie-breaker).
ENSURE_ROWS = text("""
INSERT INTO stock_balance (warehouse_id, location_id, sku_id, lot_id, first_received_at)
SELECT :warehouse_id, r.location_id, r.sku_id, r.lot_id, CAST(:occurred_at AS timestamptz)
FROM unnest(CAST(:location_ids AS bigint[]), CAST(:sku_ids AS bigint[]), CAST(:lot_ids AS bigint[]))
     AS r(location_id, sku_id, lot_id)
ORDER BY 1, 2, 3
ON CONFLICT (warehouse_id, location_id, sku_id, lot_id) DO NOTHING
""")
