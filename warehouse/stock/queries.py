"""Reading stock: on_hand (now or as of a past moment) and available."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.errors import UnknownItem
from warehouse.snapshots.read import on_hand_as_of
from warehouse.stock import validation
from warehouse.stock.resolve import Item, flush_pending, resolve

_FILTER = """
    {t}.warehouse_id = :warehouse_id AND {t}.sku_id = :sku_id
    AND (CAST(:location_id AS bigint) IS NULL OR {t}.location_id = :location_id)
    AND (CAST(:lot_id AS bigint) IS NULL OR {t}.lot_id = :lot_id)
"""

_NOW = text(
    "SELECT coalesce(sum(b.on_hand), 0) AS on_hand, coalesce(sum(b.on_hand - b.reserved), 0) AS available "
    "FROM stock_balance b WHERE " + _FILTER.format(t="b")
)


def _params(
    session: Session, warehouse: str, sku: str, location: str | None, lot: str | None
) -> dict:
    item = Item(
        validation.code(sku, field="sku"),
        validation.optional_code(location, field="location"),
        validation.optional_code(lot, field="lot"),
    )
    resolved = resolve(session, validation.code(warehouse, field="warehouse"), [item])
    sku_id, location_id, lot_id = resolved.ids(item)
    return {
        "warehouse_id": resolved.warehouse_id,
        "sku_id": sku_id,
        "location_id": location_id,
        "lot_id": lot_id,
    }


def on_hand(
    session: Session,
    *,
    warehouse: str,
    sku: str,
    location: str | None = None,
    lot: str | None = None,
    as_of: datetime | None = None,
) -> int:
    """Units physically held (reserved included), summed over bins and lots unless narrowed;
    with `as_of`, at that moment (from the latest snapshot before it plus the movements since)."""
    if as_of is None:
        return int(
            session.execute(_NOW, _params(session, warehouse, sku, location, lot)).one().on_hand
        )
    return _on_hand_as_of(session, warehouse, sku, location, lot, as_of)


class AsOfCodes(TypedDict):
    sku: str
    location: str | None
    lot: str | None
    warehouse: str


def as_of_codes(warehouse, sku, location, lot) -> AsOfCodes:
    """The codes of an as-of read, validated (the same rules on every path)."""
    return {
        "sku": validation.code(sku, field="sku"),
        "location": validation.optional_code(location, field="location"),
        "lot": validation.optional_code(lot, field="lot"),
        "warehouse": validation.code(warehouse, field="warehouse"),
    }


def _on_hand_as_of(session: Session, warehouse, sku, location, lot, as_of) -> int:
    """The codes are looked up inside the as-of statement (one round trip); only when one of
    them names nothing does `resolve` run, to say which."""
    codes = as_of_codes(warehouse, sku, location, lot)
    as_of = validation.business_time(as_of, field="as_of", change=False)
    flush_pending(session)
    value = on_hand_as_of(session, **codes, as_of=as_of)
    if value is None:
        _params(session, warehouse, sku, location, lot)  # raises UnknownItem naming the code
        value = on_hand_as_of(session, **codes, as_of=as_of)  # created since the first look
        if value is None:
            raise UnknownItem("item", f"{warehouse}/{sku}/{location}/{lot}")
    return value


def available(
    session: Session,
    *,
    warehouse: str,
    sku: str,
    location: str | None = None,
    lot: str | None = None,
) -> int:
    """Units that can be picked or reserved now: on_hand - reserved."""
    return int(
        session.execute(_NOW, _params(session, warehouse, sku, location, lot)).one().available
    )
