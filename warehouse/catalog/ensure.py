"""Master data: warehouses, locations (bins), SKUs and lots. `ensure_*` creates or returns.

Each `ensure_*` is one `INSERT ... ON CONFLICT DO NOTHING` and, when the row existed, one
lookup; two callers racing on the same code get the same row, never a unique violation.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from warehouse.db.models import Location, Lot, Sku, Warehouse
from warehouse.errors import InvalidArgument, UnknownItem
from warehouse.stock import validation


def _ensure(session: Session, model, values: dict, match: dict):
    statement = insert(model).values(**values).on_conflict_do_nothing().returning(model)
    created = session.scalars(statement).first()
    if created is not None:
        return created
    return session.scalars(select(model).filter_by(**match)).one()


def _warehouse(session: Session, warehouse: str | Warehouse) -> Warehouse:
    if isinstance(warehouse, Warehouse):
        return warehouse
    found = get_warehouse(session, warehouse)
    if found is None:
        raise UnknownItem("warehouse", warehouse)
    return found


def _sku(session: Session, sku: str | Sku) -> Sku:
    if isinstance(sku, Sku):
        return sku
    found = get_sku(session, sku)
    if found is None:
        raise UnknownItem("sku", sku)
    return found


def ensure_warehouse(session: Session, code: str, name: str | None = None) -> Warehouse:
    code = validation.code(code, field="warehouse")
    return _ensure(session, Warehouse, {"code": code, "name": name}, {"code": code})


def ensure_location(session: Session, warehouse: str | Warehouse, code: str) -> Location:
    owner = _warehouse(session, warehouse)
    code = validation.code(code, field="location")
    return _ensure(
        session,
        Location,
        {"warehouse_id": owner.id, "code": code},
        {"warehouse_id": owner.id, "code": code},
    )


def ensure_sku(
    session: Session, code: str, name: str | None = None, category: str | None = None
) -> Sku:
    code = validation.code(code, field="sku")
    return _ensure(session, Sku, {"code": code, "name": name, "category": category}, {"code": code})


def ensure_lot(session: Session, sku: str | Sku, code: str, expires: date | None = None) -> Lot:
    """The lot `code` of `sku`. An existing lot keeps its expiry; a different one is an error."""
    owner = _sku(session, sku)
    code = validation.code(code, field="lot")
    if expires is not None and not isinstance(expires, date):
        raise InvalidArgument(f"expires={expires!r} must be a date")
    lot = _ensure(
        session,
        Lot,
        {"sku_id": owner.id, "code": code, "expires": expires},
        {"sku_id": owner.id, "code": code},
    )
    if expires is not None and lot.expires != expires:
        raise InvalidArgument(
            f"lot {code!r} of sku {owner.code!r} already expires {lot.expires}, not {expires}"
        )
    return lot


def get_warehouse(session: Session, code: str) -> Warehouse | None:
    return session.scalars(select(Warehouse).where(Warehouse.code == code)).first()


def get_sku(session: Session, code: str) -> Sku | None:
    return session.scalars(select(Sku).where(Sku.code == code)).first()
