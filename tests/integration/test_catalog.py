"""Master data: ensure_* creates or returns; CSV import checks the whole file first."""

from datetime import date

import pytest
from sqlalchemy import text

from tests.builders import unique
from warehouse import catalog
from warehouse.catalog import csv_import as catalog_import
from warehouse.errors import InvalidArgument, UnknownItem

pytestmark = pytest.mark.integration


def test_ensure_returns_the_existing_row(db):
    code = unique("W")
    with db.session() as s:
        first = catalog.ensure_warehouse(s, code, "North")
        again = catalog.ensure_warehouse(s, code)
        location = catalog.ensure_location(s, code, "A-01")
        assert catalog.ensure_location(s, first, "A-01").id == location.id
        sku = catalog.ensure_sku(s, unique("S"), category="frozen")
        lot = catalog.ensure_lot(s, sku.code, "L1", date(2027, 1, 1))
        assert catalog.ensure_lot(s, sku, "L1").id == lot.id
    assert first.id == again.id and again.name == "North"


def test_a_lot_keeps_its_expiry(db):
    with db.session() as s:
        sku = catalog.ensure_sku(s, unique("S"))
        catalog.ensure_lot(s, sku, "L1", date(2027, 1, 1))
        with pytest.raises(InvalidArgument, match="already expires 2027-01-01"):
            catalog.ensure_lot(s, sku, "L1", date(2028, 1, 1))


def test_location_of_unknown_warehouse_is_refused(db):
    with pytest.raises(UnknownItem, match="unknown warehouse 'NOWHERE"), db.session() as s:
        catalog.ensure_location(s, "NOWHERE-" + unique("x"), "A-01")


def test_csv_import_creates_new_rows_and_counts_existing_ones(db):
    w = unique("W")
    s1, s2 = unique("S"), unique("S")
    with db.session() as s:
        report = catalog_import.import_csv(s, "warehouses", f"code,name\n{w},West\n".encode())
        assert (report.rows, report.created) == (1, 1)
        catalog_import.import_csv(s, "locations", f"warehouse,code\n{w},A-01\n{w},A-02\n".encode())
        catalog_import.import_csv(
            s, "skus", f"code,name,category\n{s1},Milk,dairy\n{s2},,\n".encode()
        )
        report = catalog_import.import_csv(
            s, "lots", f"sku,code,expires\n{s1},L1,2027-01-31\n{s2},L9,\n".encode()
        )
        assert report.created == 2
        again = catalog_import.import_csv(
            s, "skus", f"code,name,category\n{s1},Milk,dairy\n".encode()
        )
        assert (again.created, again.existing) == (0, 1)
        assert catalog.get_sku(s, s1).category == "dairy"


def test_csv_import_naming_an_unknown_reference_writes_nothing(db):
    w = unique("W")
    with db.session() as s:
        catalog.ensure_warehouse(s, w)
    with pytest.raises(InvalidArgument, match=r"line 3: warehouse 'GHOST' is unknown"):
        with db.session() as s:
            catalog_import.import_csv(
                s, "locations", f"warehouse,code\n{w},A-01\nGHOST,A-02\n".encode()
            )
    with db.session() as s:
        assert (
            s.execute(
                text(
                    "SELECT count(*) FROM location l JOIN warehouse w ON w.id = l.warehouse_id WHERE w.code = :w"
                ),
                {"w": w},
            ).scalar()
            == 0
        )
