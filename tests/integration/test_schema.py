"""The schema as migrations build it: models agree with it, and the database itself refuses
what the invariants forbid, whatever code writes to it."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from warehouse import schema
from warehouse.models import Base

pytestmark = pytest.mark.integration


def test_database_is_at_the_head_revision(db):
    assert schema.current_revision(db) == schema.head_revision()


def test_upgrade_twice_is_harmless(db):
    assert schema.upgrade(db) == schema.head_revision()


def _modelled(name, type_, _parents) -> bool:
    # Partitions are made at run time and alembic_version is Alembic's own: neither is modelled.
    return not (type_ == "table" and (name.startswith(("stock_movement_", "stock_snapshot_", "erp_feed_")) or name == "alembic_version"))


def test_models_match_the_migrated_schema(db):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "include_name": _modelled})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_ledger_is_partitioned_by_month_with_a_default_partition(db):
    with db.session() as s:
        strategy = s.execute(
            text("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'stock_movement'::regclass")
        ).scalar()
        names = set(s.execute(text("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'stock_movement'::regclass")).scalars())
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
                text("UPDATE stock_balance SET on_hand = :on_hand, reserved = :reserved WHERE sku_id = (SELECT id FROM sku WHERE code = :sku)"),
                {"on_hand": on_hand, "reserved": reserved, "sku": sku},
            )


def test_stock_without_a_lot_is_one_row_per_bin(world):
    sku = world.add_sku()
    world.receive(sku, 1)
    world.receive(sku, 2)
    with world.db.session() as s:
        rows = s.execute(
            text("SELECT count(*) FROM stock_balance WHERE sku_id = (SELECT id FROM sku WHERE code = :sku)"), {"sku": sku}
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
