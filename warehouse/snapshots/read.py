"""Stock as of a past moment: the latest snapshot before that day, plus the movements dated
from the snapshot's end up to the moment, plus those dated before its end but recorded after
it was built (backdated). Exact whether or not the snapshots have caught up.

One statement, one round trip: it looks up the codes, picks the base snapshot and reads its
(snapshot_date, watermark) together with its rows and the movements (one MVCC snapshot, so a
rebuild in between cannot be counted twice), and its plan is prepared once and reused:

- The bounds that prune partitions are bound as text and cast in SQL. A text -> date or
  timestamptz cast is STABLE, so the planner cannot fold it and prune at plan time: custom
  plans then look no cheaper than the generic one, and after its first five runs the server
  keeps the generic plan (typed bounds made it re-plan every partition on every call, which
  cost several times the execution). The generic plan evaluates the casts at executor start
  and drops the other partitions before setting up their scans; bounds that come from
  snapshot_day itself prune only at run time, after every partition's scan was set up.
- Days are business days (`warehouse.history.calendar`). The day of `as_of` and the first instant of
  `since` are computed here and bound as text like the other bounds; the end of the base day,
  which only the statement knows, is `cangflow_day_start(day + 1, zone)` (migration 0009: the
  same instant as `calendar.day_start`, also where DST makes local midnight skipped or twice).
- `since` is the first day of the month the base snapshot is expected in (that of the day
  before `as_of`). It bounds the snapshot and the movements read by key; the statement returns
  the base day it found, and a base older than `since` (snapshots behind by more than that) is
  read again with `since` moved to the base's month.
- Movements dated before `since` and recorded after the watermark (backdated into an earlier
  month) are found through the recorded_at index: there are few. Reading them by key would
  fetch the key's whole history, month by month, so the key is compared as `id + 0` (no index
  on it applies), and recorded_at gets a harmless upper bound so that the generic plan
  estimates a narrow range (an index scan) rather than a third of each partition.
"""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.errors import InvalidArgument
from warehouse.history.calendar import day_of, day_start, zone_name
from warehouse.snapshots.history_floor import first_day_after

_AS_OF = "CAST(CAST(:as_of AS text) AS timestamptz)"
_DAY = "CAST(CAST(:day AS text) AS date)"  # the business day of as_of
_SINCE = "CAST(CAST(:since AS text) AS date)"
_SINCE_START = "CAST(CAST(:since_start AS text) AS timestamptz)"  # the first instant of since


def _narrow(t: str) -> str:
    return (
        f"(CAST(:location AS text) IS NULL OR {t}.location_id = i.location_id)"
        f" AND (CAST(:lot AS text) IS NULL OR {t}.lot_id = i.lot_id)"
    )


_STATEMENT = text(f"""
WITH item AS MATERIALIZED (
    SELECT w.id AS warehouse_id, s.id AS sku_id, l.id AS location_id, t.id AS lot_id
    FROM warehouse w
    JOIN sku s ON s.code = :sku
    LEFT JOIN location l ON l.warehouse_id = w.id AND l.code = :location
    LEFT JOIN lot t ON t.sku_id = s.id AND t.code = :lot
    WHERE w.code = :warehouse
),
base AS MATERIALIZED (
    SELECT d.snapshot_date, d.watermark, cangflow_day_start(d.snapshot_date + 1, CAST(:zone AS text)) AS base_end
    FROM snapshot_day d
    WHERE d.snapshot_date < {_DAY}
    ORDER BY d.snapshot_date DESC LIMIT 1
)
SELECT i.warehouse_id, i.sku_id, i.location_id, i.lot_id, b.snapshot_date AS base_day,
    (SELECT coalesce(sum(s.on_hand), 0) FROM stock_snapshot s
     WHERE s.snapshot_date = b.snapshot_date AND s.snapshot_date >= {_SINCE} AND s.snapshot_date < {_DAY}
       AND s.warehouse_id = i.warehouse_id AND s.sku_id = i.sku_id AND {_narrow("s")})
  + (SELECT coalesce(sum(m.qty), 0) FROM stock_movement m
     WHERE m.warehouse_id = i.warehouse_id AND m.sku_id = i.sku_id AND {_narrow("m")}
       AND m.occurred_at >= {_SINCE_START} AND m.occurred_at <= {_AS_OF}
       AND (m.occurred_at >= b.base_end OR m.recorded_at >= b.watermark))
  + (SELECT coalesce(sum(m.qty), 0) FROM stock_movement m
     WHERE m.warehouse_id + 0 = i.warehouse_id AND m.sku_id + 0 = i.sku_id AND {_narrow("m")}
       AND m.occurred_at < {_SINCE_START}
       AND m.recorded_at >= b.watermark AND m.recorded_at <= 'infinity')
    AS on_hand,
    (SELECT max(h.month) FROM history_month h WHERE h.state IN ('archived', 'dropped')) AS last_retired
FROM item i LEFT JOIN base b ON true
""")

# Rendered once for psycopg, and run on the psycopg connection directly (see `_execute`).
_RENDERED = str(_STATEMENT.compile(dialect=PGDialect_psycopg()))

_FROM_LEDGER = text("""
SELECT coalesce(sum(m.qty), 0) FROM stock_movement m
WHERE m.warehouse_id = :warehouse_id AND m.sku_id = :sku_id
  AND (CAST(:location_id AS bigint) IS NULL OR m.location_id = :location_id)
  AND (CAST(:lot_id AS bigint) IS NULL OR m.lot_id = :lot_id)
  AND m.occurred_at <= CAST(:as_of AS timestamptz)
""")
_FROM_LEDGER_RENDERED = str(_FROM_LEDGER.compile(dialect=PGDialect_psycopg()))


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _first_instant(day: date) -> str:
    try:
        return day_start(day).isoformat()
    except OverflowError:  # a local midnight of year 1 east of UTC is before datetime.min
        return "-infinity"


def on_hand_as_of(session: Session, **item: Any) -> int | None:
    """`on_hand_as_of_on` in `session`'s transaction (`item`: its keyword arguments)."""
    return on_hand_as_of_on(raw_sql.driver(session), **item)


def on_hand_as_of_on(
    connection: psycopg.Connection,
    *,
    warehouse: str,
    sku: str,
    location: str | None = None,
    lot: str | None = None,
    as_of: datetime,
) -> int | None:
    """on_hand of the item named by codes at `as_of` (an aware datetime); None when a code
    names nothing (the caller resolves the codes to say which). On a psycopg connection: in the
    caller's transaction, or in autocommit (`stock.DirectStock.on_hand`), where the statement
    is a consistent read of its own."""
    day = day_of(as_of)
    params = {
        "warehouse": warehouse,
        "sku": sku,
        "location": location,
        "lot": lot,
        "as_of": as_of.astimezone(UTC).isoformat(),
        "day": day.isoformat(),
        "zone": zone_name(),
    }
    since = _month_start(day - timedelta(days=1) if day > date.min else day)
    while True:
        row = _execute(
            connection, {**params, "since": since.isoformat(), "since_start": _first_instant(since)}
        )
        if row is None or (location and row.location_id is None) or (lot and row.lot_id is None):
            return None
        _refuse_retired(row.last_retired, as_of)
        if row.base_day is None:
            return _from_ledger(connection, row, as_of)
        if row.base_day >= since:
            return int(row.on_hand)
        # The snapshots are behind by more than a month: read again from the base's month
        # (in a new statement, so the base is read again too; it can only be older if days were deleted).
        since = _month_start(row.base_day)


_Row = namedtuple("_Row", "warehouse_id sku_id location_id lot_id base_day on_hand last_retired")


def _refuse_retired(last_retired: date | None, as_of: datetime) -> None:
    """A moment before the retained ledger has no exact answer: the snapshot before it is kept a
    month longer than the ledger, but the movements between that snapshot and the moment are gone."""
    if last_retired is None:
        return
    floor = first_day_after(last_retired)
    if as_of < day_start(floor):
        raise InvalidArgument(
            f"as_of={as_of.isoformat()} is before the retained history (the ledger starts {floor}); "
            "the closing stock of each kept day before it is in stock_snapshot"
        )


def _execute(connection: psycopg.Connection, params: dict) -> _Row | None:
    row = raw_sql.fetchone_on(connection, _RENDERED, params)
    return None if row is None else _Row(*row)


def _from_ledger(connection: psycopg.Connection, ids, as_of: datetime) -> int:
    """No snapshot before the day: the whole ledger, unless its start was archived."""
    if ids.last_retired is not None:
        floor = first_day_after(ids.last_retired)
        raise InvalidArgument(
            f"as_of={as_of.isoformat()} is before the retained snapshots (the ledger starts {floor})"
        )
    params = {
        "warehouse_id": ids.warehouse_id,
        "sku_id": ids.sku_id,
        "location_id": ids.location_id,
        "lot_id": ids.lot_id,
        "as_of": as_of,
    }
    row = raw_sql.fetchone_on(connection, _FROM_LEDGER_RENDERED, params)
    assert row is not None  # an aggregate without GROUP BY: one row
    return int(row[0])
