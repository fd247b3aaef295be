"""Stock as of a past moment: the latest snapshot before that day, plus the movements dated
from the snapshot's end up to the moment, plus those dated before its end but recorded after
it was built (backdated). Exact whether or not the snapshots have caught up."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..errors import InvalidArgument
from .days import day_end, day_of
from .history_floor import first_retained_day

_FILTER = """
    {t}.warehouse_id = :warehouse_id AND {t}.sku_id = :sku_id
    AND (CAST(:location_id AS bigint) IS NULL OR {t}.location_id = :location_id)
    AND (CAST(:lot_id AS bigint) IS NULL OR {t}.lot_id = :lot_id)
"""

_BASE = text("""
SELECT snapshot_date, watermark FROM snapshot_day
WHERE snapshot_date < CAST(:day AS date) ORDER BY snapshot_date DESC LIMIT 1
""")

_FROM_SNAPSHOT = text(
    "SELECT (SELECT coalesce(sum(s.on_hand), 0) FROM stock_snapshot s"
    "        WHERE s.snapshot_date = CAST(:base_day AS date) AND " + _FILTER.format(t="s") + ")"
    "     + (SELECT coalesce(sum(m.qty), 0) FROM stock_movement m WHERE " + _FILTER.format(t="m") +
    "        AND m.occurred_at >= CAST(:base_end AS timestamptz) AND m.occurred_at <= CAST(:as_of AS timestamptz))"
    "     + (SELECT coalesce(sum(m.qty), 0) FROM stock_movement m WHERE " + _FILTER.format(t="m") +
    "        AND m.occurred_at < CAST(:base_end AS timestamptz) AND m.recorded_at >= CAST(:watermark AS timestamptz))"
)

_FROM_LEDGER = text(
    "SELECT coalesce(sum(m.qty), 0) FROM stock_movement m WHERE " + _FILTER.format(t="m")
    + " AND m.occurred_at <= CAST(:as_of AS timestamptz)"
)


def on_hand_as_of(session: Session, ids: dict, as_of: datetime) -> int:
    """on_hand for the resolved `ids` (warehouse_id, sku_id, location_id, lot_id) at `as_of`."""
    base = session.execute(_BASE, {"day": day_of(as_of)}).first()
    if base is not None:
        params = {**ids, "as_of": as_of, "base_day": base.snapshot_date, "base_end": day_end(base.snapshot_date),
                  "watermark": base.watermark}
        return int(session.execute(_FROM_SNAPSHOT, params).scalar_one())
    floor = first_retained_day(session)
    if floor is not None:
        raise InvalidArgument(f"as_of={as_of.isoformat()} is before the retained history (the ledger starts {floor})")
    return int(session.execute(_FROM_LEDGER, {**ids, "as_of": as_of}).scalar_one())
