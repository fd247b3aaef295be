"""Adjustment order lines as people look at them (`cangflow adjustments list` and `show`): with
the run, feed and as_of each came from, and the codes rather than ids."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

OPEN_STATUSES = ("pending_approval", "held", "for_erp")  # waiting for a person, or for the ERP

_FROM = """
FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
JOIN reconciliation_run r ON r.id = o.run_id
JOIN warehouse w ON w.id = l.warehouse_id JOIN sku s ON s.id = l.sku_id LEFT JOIN lot ON lot.id = l.lot_id
"""
_LINES = text(f"""
SELECT l.id, o.run_id, r.feed_name, r.as_of, now() - r.as_of AS age, w.code AS warehouse, s.code AS sku,
       lot.code AS lot, l.wms_qty, l.erp_qty, l.delta, l.status, l.superseded_by_run
{_FROM}
WHERE :all OR l.status = ANY(:open) ORDER BY l.id LIMIT :limit
""")
_LINE = text(f"""
SELECT l.id, o.run_id, r.feed_name, r.as_of, r.truth, w.code AS warehouse, s.code AS sku, lot.code AS lot,
       l.wms_qty, l.erp_qty, l.delta, l.status, l.reason, l.decided_by, l.decided_at, l.movement_ids,
       l.superseded_by_run, l.acknowledged_at
{_FROM}
WHERE l.id = :line
""")


def lines(session: Session, *, all_lines: bool = False, limit: int = 1000) -> list[Row]:
    """The open lines (or every line), oldest first, at most `limit`."""
    return list(
        session.execute(
            _LINES, {"all": all_lines, "open": list(OPEN_STATUSES), "limit": limit}
        ).all()
    )


def line(session: Session, line_id: int) -> dict[str, Any] | None:
    """One line with where it came from and what was decided; None when there is no such line."""
    found = session.execute(_LINE, {"line": line_id}).mappings().first()
    return dict(found) if found is not None else None
