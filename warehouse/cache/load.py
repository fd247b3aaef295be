"""What the cache holds, read from PostgreSQL: available (on_hand - reserved summed over bins
and lots) and a version that grows with every change of the pair's rows (the sum of their
`version` columns: every change bumps one, and balance rows are never deleted)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

_ONE = text("""
SELECT w.id IS NOT NULL AND s.id IS NOT NULL AS known,
       (SELECT coalesce(sum(b.on_hand - b.reserved), 0) FROM stock_balance b
        WHERE b.warehouse_id = w.id AND b.sku_id = s.id) AS available,
       (SELECT coalesce(sum(b.version), 0) FROM stock_balance b
        WHERE b.warehouse_id = w.id AND b.sku_id = s.id) AS version
FROM (SELECT 1) AS one
LEFT JOIN warehouse w ON w.code = :warehouse
LEFT JOIN sku s ON s.code = :sku
""")

_MANY = text("""
SELECT k.warehouse, k.sku, coalesce(sum(b.on_hand - b.reserved), 0) AS available,
       coalesce(sum(b.version), 0) AS version
FROM unnest(CAST(:warehouses AS text[]), CAST(:skus AS text[])) AS k(warehouse, sku)
JOIN warehouse w ON w.code = k.warehouse
JOIN sku s ON s.code = k.sku
LEFT JOIN stock_balance b ON b.warehouse_id = w.id AND b.sku_id = s.id
GROUP BY k.warehouse, k.sku
""")


@dataclass(frozen=True)
class Loaded:
    known: bool
    available: int
    version: int


def load_one(session: Session, warehouse: str, sku: str) -> Loaded:
    row = session.execute(_ONE, {"warehouse": warehouse, "sku": sku}).one()
    return Loaded(bool(row.known), int(row.available), int(row.version))


def load_many(session: Session, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Loaded]:
    """Known pairs only, in one set-based statement."""
    if not pairs:
        return {}
    rows = session.execute(_MANY, {"warehouses": [w for w, _ in pairs], "skus": [s for _, s in pairs]})
    return {(r.warehouse, r.sku): Loaded(True, int(r.available), int(r.version)) for r in rows}
