"""Small builders for test rows: unique codes per test, so tests share a database safely."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date

from warehouse import Database, catalog, stock


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class World:
    db: Database
    warehouse: str
    locations: list[str] = field(default_factory=list)
    skus: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, db: Database, *, bins: int = 3) -> World:
        world = cls(db, unique("W"))
        with db.session() as session:
            catalog.ensure_warehouse(session, world.warehouse, "test warehouse")
        world.add_bins(bins)
        return world

    def add_bins(self, count: int) -> list[str]:
        codes = [f"{self.warehouse}-B{len(self.locations) + i:03d}" for i in range(count)]
        with self.db.session() as session:
            for code in codes:
                catalog.ensure_location(session, self.warehouse, code)
        self.locations.extend(codes)
        return codes

    def add_sku(
        self, *, lots: dict[str, date | None] | None = None, category: str | None = None
    ) -> str:
        code = unique("SKU")
        with self.db.session() as session:
            catalog.ensure_sku(session, code, category=category)
            for lot_code, expires in (lots or {}).items():
                catalog.ensure_lot(session, code, lot_code, expires)
        self.skus.append(code)
        return code

    def stocked_sku(
        self,
        qty: int,
        *,
        location: str | None = None,
        lot: str | None = None,
        expires: date | None = None,
    ) -> str:
        code = self.add_sku(lots={lot: expires} if lot else None)
        self.receive(code, qty, location=location, lot=lot)
        return code

    def receive(
        self, sku: str, qty: int, *, location: str | None = None, lot: str | None = None
    ) -> None:
        with self.db.session() as session:
            stock.receive(
                session,
                warehouse=self.warehouse,
                sku=sku,
                qty=qty,
                location=location or self.locations[0],
                lot=lot,
            )

    def on_hand(self, sku: str, **narrow) -> int:
        with self.db.session() as session:
            return stock.on_hand(session, warehouse=self.warehouse, sku=sku, **narrow)

    def available(self, sku: str, **narrow) -> int:
        with self.db.session() as session:
            return stock.available(session, warehouse=self.warehouse, sku=sku, **narrow)
