"""The blast-radius brake: a run whose differences are too many or too large for a normal night
(a broken ERP export of zeros, a half feed) applies nothing automatically.

Three limits, from the settings unless the run overrides them:
- the share of the feed's rows that differ beyond tolerance (CANGFLOW_RECONCILE_MAX_DIFFERING_PCT, 5%);
- the total absolute delta as a share of the WMS stock of the warehouses concerned
  (CANGFLOW_RECONCILE_MAX_DELTA_PCT, 2%);
- any SKU that would go to zero from a meaningful quantity (CANGFLOW_RECONCILE_ZEROING_MIN_QTY, 10).
Over any of them, the run's lines are `held` for a person (`cangflow adjustments approve --run
N`): with the ERP as the truth nothing is applied to WMS stock, with the WMS as the truth nothing
is sent to the ERP, until then. The run records which limit and by how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.reconcile.runs import RunSettings
from warehouse.settings import get_settings

_FIGURES = text("""
WITH due AS (
    SELECT d.* FROM reconciliation_difference d
    WHERE d.run_id = :run AND NOT d.within_tolerance AND (d.kind <> 'not_in_feed' OR :full_feed)
)
SELECT count(*) AS beyond, CAST(coalesce(sum(abs(delta)), 0) AS bigint) AS total_delta,
       count(*) FILTER (WHERE coalesce(erp_qty, 0) = 0 AND wms_qty >= :meaningful) AS zeroed,
       (SELECT CAST(coalesce(sum(b.on_hand), 0) AS bigint) FROM stock_balance b
        WHERE b.warehouse_id IN (SELECT DISTINCT warehouse_id FROM due)) AS stock,
       (SELECT coalesce(r.feed_rows, 0) FROM reconciliation_run r WHERE r.id = :run) AS feed_rows
FROM due
""")
_RECORD = text("UPDATE reconciliation_run SET brake = :brake WHERE id = :run")


@dataclass(frozen=True)
class Brake:
    reasons: tuple[str, ...]
    max_lines: int | None = None  # the most lines a run within the limits can have

    @property
    def engaged(self) -> bool:
        return bool(self.reasons)

    def __str__(self) -> str:
        return "; ".join(self.reasons)


def check(session: Session, run_id: int, settings: RunSettings) -> Brake:
    """The run's differences against the limits; records the outcome on the run."""
    configured = get_settings()
    max_differing = (
        settings.max_differing_pct
        if settings.max_differing_pct is not None
        else configured.reconcile_max_differing_pct
    )
    max_delta = (
        settings.max_delta_pct
        if settings.max_delta_pct is not None
        else configured.reconcile_max_delta_pct
    )
    meaningful = configured.reconcile_zeroing_min_qty
    f = session.execute(
        _FIGURES, {"run": run_id, "full_feed": settings.full_feed, "meaningful": meaningful}
    ).one()
    reasons = []
    differing = 100.0 * f.beyond / f.feed_rows if f.feed_rows else 0.0
    if differing > max_differing:
        reasons.append(
            f"{f.beyond:,} of {f.feed_rows:,} feed rows differ beyond tolerance "
            f"({differing:.1f}%, limit {max_differing:g}%)"
        )
    delta = 100.0 * f.total_delta / f.stock if f.stock else (100.0 if f.total_delta else 0.0)
    if delta > max_delta:
        reasons.append(
            f"the differences add up to {f.total_delta:,} units, {delta:.1f}% of the {f.stock:,} in stock "
            f"there (limit {max_delta:g}%)"
        )
    if f.zeroed and settings.truth == "erp":
        reasons.append(f"{f.zeroed:,} SKU(s) would go to zero from {meaningful} or more units")
    elif f.zeroed:
        reasons.append(
            f"{f.zeroed:,} SKU(s) the ERP books at zero hold {meaningful} or more units in the WMS"
        )
    brake = Brake(tuple(reasons), math.floor(f.feed_rows * max_differing / 100))
    session.execute(_RECORD, {"run": run_id, "brake": str(brake) or None})
    return brake
