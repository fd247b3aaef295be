"""A feed's shape, and the bounds the previous feed of the same scope sets for the next one.

A broken ERP export rarely breaks a row rule: it is cut short, or its quantities are all zero,
or a unit changed and every number jumped. None of that is visible row by row, so each loaded
feed is measured (rows, share of zero quantities, mean quantity, the warehouses it covers) and
the measure is kept on its run. The next feed of an overlapping scope, with the same
completeness (`full_feed`), is held to bounds derived from the newest such run; the `erp_feed`
suite (expectations/erp_feed.py) checks them. A feed that changed shape on purpose (a new
warehouse, a stock take that zeroed a range) passes with `--confirm-feed-shape`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.reconcile.feed import quoted
from warehouse.settings import get_settings

# Runs after the row checks, so every quantity is a whole number of at most 13 digits.
_MEASURE = """
SELECT count(*) AS rows,
       count(*) FILTER (WHERE CAST(quantity AS bigint) = 0) AS zeros,
       CAST(avg(CAST(quantity AS bigint)) AS float8) AS mean,
       (SELECT array_agg(w.id ORDER BY w.id) FROM (SELECT DISTINCT warehouse FROM {table}) f
        JOIN warehouse w ON w.code = f.warehouse) AS warehouses
FROM {table}
"""
_RECORD = text("""
UPDATE reconciliation_run SET profile = CAST(:profile AS jsonb), warehouse_ids = CAST(:warehouses AS bigint[])
WHERE id = :run
""")
_PREVIOUS = text("""
SELECT id, profile FROM reconciliation_run
WHERE status = 'done' AND id <> :run AND profile IS NOT NULL
  AND warehouse_ids && CAST(:warehouses AS bigint[])
  AND coalesce(CAST(settings ->> 'full_feed' AS boolean), false) = :full_feed
ORDER BY as_of DESC, id DESC LIMIT 1
""")


@dataclass(frozen=True)
class Profile:
    rows: int
    zero_pct: float  # share of rows with quantity 0, in percent
    mean_qty: float
    warehouse_ids: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "zero_pct": round(self.zero_pct, 4), "mean_qty": self.mean_qty}


@dataclass(frozen=True)
class Bounds:
    """What the feed must look like, from the previous feed of its scope (run `previous_run`)."""

    previous_run: int
    previous_rows: int
    min_rows: int
    max_zero_pct: float | None  # None: no limit (the previous feed was mostly zeros already)
    mean_low: float | None  # None: no limit (the previous feed's mean was 0)
    mean_high: float | None

    def as_context(self) -> dict[str, Any]:
        """The suite's context (expectations/erp_feed.py)."""
        return {
            "previous_run": self.previous_run,
            "previous_rows": self.previous_rows,
            "min_rows": self.min_rows,
            "max_zero_pct": self.max_zero_pct,
            "mean_low": self.mean_low,
            "mean_high": self.mean_high,
        }


def measure(session: Session, staging: str) -> Profile:
    """One pass over the staged (and row-checked) feed."""
    cursor = raw_sql.driver(session).cursor()
    try:
        measured = cursor.execute(_MEASURE.format(table=quoted(session, staging))).fetchone()
        assert measured is not None  # aggregates without GROUP BY: one row
        rows, zeros, mean, warehouses = measured
    finally:
        cursor.close()
    return Profile(
        rows, 100.0 * zeros / rows if rows else 0.0, float(mean or 0.0), tuple(warehouses or ())
    )


def record(session: Session, run_id: int, profile: Profile) -> None:
    session.execute(
        _RECORD,
        {
            "run": run_id,
            "profile": json.dumps(profile.as_json()),
            "warehouses": list(profile.warehouse_ids),
        },
    )


def bounds(
    session: Session,
    run_id: int,
    warehouse_ids: tuple[int, ...] | list[int],
    *,
    full_feed: bool,
    confirmed: bool = False,
) -> Bounds | None:
    """The bounds for this run's feed; None when the operator confirmed the feed's shape, when
    no earlier feed of the scope was reconciled, or when that feed was too small to judge by."""
    if confirmed:
        return None
    previous = session.execute(
        _PREVIOUS, {"run": run_id, "warehouses": list(warehouse_ids), "full_feed": full_feed}
    ).first()
    settings = get_settings()
    if previous is None or previous.profile.get("rows", 0) < settings.reconcile_profile_min_rows:
        return None
    shape = previous.profile
    zero_limit = shape["zero_pct"] + settings.reconcile_max_zero_rise_pct
    mean, factor = shape["mean_qty"], settings.reconcile_max_mean_factor
    return Bounds(
        previous_run=previous.id,
        previous_rows=shape["rows"],
        min_rows=math.ceil(shape["rows"] * settings.reconcile_min_rows_pct / 100),
        max_zero_pct=zero_limit if zero_limit < 100 else None,
        mean_low=mean / factor if mean > 0 else None,
        mean_high=mean * factor if mean > 0 else None,
    )
