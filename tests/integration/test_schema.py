"""The schema as migrations build it: models agree with it, and the database itself refuses
what the invariants forbid, whatever code writes to it."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from warehouse.db import schema
from warehouse.db.models import Base

pytestmark = pytest.mark.integration


def test_database_is_at_the_head_revision(db):
    assert schema.current_revision(db) == schema.head_revision()


def test_upgrade_twice_is_harmless(db):
    assert schema.upgrade(db) == schema.head_revision()


def _modelled(name, type_, _parents) -> bool:
    # Partitions are made at run time and alembic_version is Alembic's own: neither is modelled.
    return not (
        type_ == "table"
        and (
            name.startswith(("stock_movement_", "stock_snapshot_", "erp_feed_"))
            or name == "alembic_version"
        )
    )


def test_models_match_the_migrated_schema(db):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": _modelled}
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_ledger_is_partitioned_by_month_with_a_default_partition(db):
    with db.session() as s:
        strategy = s.execute(
            text(
                "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'stock_movement'::regclass"
            )
        ).scalar()
        names = set(
            s.execute(
                text(
                    "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'stock_movement'::regclass"
                )
            ).scalars()
        )
    assert strategy == "r"
    assert "stock_movement_default" in names
    assert any(name.startswith("stock_movement_p") for name in names)


@pytest.mark.parametrize(
    "on_hand, reserved",
    [(-1, 0), (5, -1), (5, 6)],
)
def test_balance_check_constraints_refuse_impossible_rows(world, on_hand, reserved):
    sku = world.stocked_sku(5)
    with pytest.raises(IntegrityError, match="ck_stock_balance"):
        with world.db.session() as s:
            s.execute(
                text(
                    "UPDATE stock_balance SET on_hand = :on_hand, reserved = :reserved WHERE sku_id = (SELECT id FROM sku WHERE code = :sku)"
                ),
                {"on_hand": on_hand, "reserved": reserved, "sku": sku},
            )


def test_stock_without_a_lot_is_one_row_per_bin(world):
    sku = world.add_sku()
    world.receive(sku, 1)
    world.receive(sku, 2)
    with world.db.session() as s:
        rows = s.execute(
            text(
                "SELECT count(*) FROM stock_balance WHERE sku_id = (SELECT id FROM sku WHERE code = :sku)"
            ),
            {"sku": sku},
        ).scalar()
    assert rows == 1 and world.on_hand(sku) == 3


def test_a_slow_statement_through_the_engine_is_counted(db, recorded_metrics, monkeypatch):
    from warehouse.settings import get_settings

    monkeypatch.setattr(get_settings(), "slow_query_s", 0.05)
    import warehouse

    slow_db = warehouse.connect(db.url.render_as_string(hide_password=False), pool_size=1)
    try:
        with slow_db.session() as s:
            s.execute(text("SELECT pg_sleep(0.1)"))
    finally:
        slow_db.dispose()
    assert recorded_metrics.value("cangflow_db_slow_queries_total", operation="SELECT") == 1


def _ids(db, world, sku):
    with db.session() as s:
        return s.execute(
            text("""
            SELECT b.id, b.warehouse_id, b.location_id, b.sku_id FROM stock_balance b
            JOIN sku ON sku.id = b.sku_id WHERE sku.code = :sku"""),
            {"sku": sku},
        ).one()


WRONG_DIMENSIONS = {
    "a bin of another warehouse": (
        "INSERT INTO stock_balance (warehouse_id, location_id, sku_id) VALUES (:other_warehouse, :location, :sku)",
        "fk_stock_balance_location_in_warehouse",
    ),
    "a lot of another SKU": (
        "INSERT INTO stock_balance (warehouse_id, location_id, sku_id, lot_id) VALUES (:warehouse, :location, :sku, :other_lot)",
        "fk_stock_balance_lot_of_sku",
    ),
    "a movement naming another SKU than its balance row": (
        (
            "INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, location_id, "
            "sku_id, qty) VALUES (now(), 'adjustment', 0, :balance, :warehouse, :location, :other_sku, 1)"
        ),
        "fk_stock_movement_balance_dimensions",
    ),
    "a movement naming another bin than its balance row": (
        (
            "INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, location_id, "
            "sku_id, qty) VALUES (now(), 'adjustment', 0, :balance, :warehouse, :other_location, :sku, 1)"
        ),
        "fk_stock_movement_balance_dimensions",
    ),
    "a movement naming a lot its balance row does not hold": (
        (
            "INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, location_id, "
            "sku_id, lot_id, qty) VALUES (now(), 'adjustment', 0, :balance, :warehouse, :location, :sku, :other_lot, 1)"
        ),
        "fk_stock_movement_balance_lot",
    ),
}


@pytest.mark.parametrize("case", list(WRONG_DIMENSIONS))
def test_the_schema_refuses_rows_whose_dimensions_do_not_belong_together(db, world, case):
    from tests.builders import World

    statement, constraint = WRONG_DIMENSIONS[case]
    sku = world.stocked_sku(5)
    other = World.create(db, bins=1)
    other_sku = other.add_sku(lots={"L-OTHER": None})
    balance, warehouse_id, location, sku_id = _ids(db, world, sku)
    with db.session() as s:
        other_ids = s.execute(
            text("""
            SELECT w.id AS warehouse, l.id AS location, k.id AS sku, t.id AS lot
            FROM warehouse w JOIN location l ON l.warehouse_id = w.id, sku k JOIN lot t ON t.sku_id = k.id
            WHERE w.code = :warehouse AND k.code = :sku"""),
            {"warehouse": other.warehouse, "sku": other_sku},
        ).one()
    parameters = {
        "balance": balance,
        "warehouse": warehouse_id,
        "location": location,
        "sku": sku_id,
        "other_warehouse": other_ids.warehouse,
        "other_location": other_ids.location,
        "other_sku": other_ids.sku,
        "other_lot": other_ids.lot,
    }
    with pytest.raises(IntegrityError, match=constraint), db.session() as s:
        s.execute(text(statement), parameters)


def test_the_books_check_finds_a_lot_less_movement_on_a_lotted_balance_which_no_key_refuses(
    db, world
):
    """The one mismatch the schema lets through (a foreign key with a NULL column is not
    checked), written by hand as the app role may: the books check names it, full and
    incremental; the same movement with its lot is not named (the control)."""
    from datetime import UTC, datetime, timedelta

    from warehouse import invariants

    sku = world.stocked_sku(5, lot="L-CHECKED")
    balance, warehouse_id, location, sku_id = _ids(db, world, sku)
    since = datetime.now(UTC) - timedelta(minutes=1)
    insert = text(
        "INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, "
        "location_id, sku_id, lot_id, qty) VALUES (now(), 'adjustment', 0, :balance, :warehouse, "
        ":location, :sku, (SELECT lot_id FROM stock_balance WHERE id = :balance AND :lotted), 1) "
        "RETURNING id"
    )
    parameters = {
        "balance": balance,
        "warehouse": warehouse_id,
        "location": location,
        "sku": sku_id,
    }
    for lotted in (True, False):
        with db.session() as s:
            movement = s.execute(insert, {**parameters, "lotted": lotted}).scalar_one()
            named = f"movement {movement} (operation 0) has no lot, but its balance {balance} holds lot L-CHECKED"
            for found in (invariants.check(s), invariants.check(s, since=since)):
                lot_findings = [
                    v.detail for v in found if v.invariant == "movement_lot_is_its_balances"
                ]
                assert (named in lot_findings) is not lotted, lot_findings
            s.rollback()  # the shared test database keeps its books
