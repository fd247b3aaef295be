"""The schema ties the dimensions: a bin belongs to its warehouse, a lot to its SKU, and a ledger
movement to its balance row's warehouse, bin, SKU (and lot), so a wrong id cannot be written even
by hand. Composite foreign keys over composite unique keys; the plain balance_id key of the
ledger is replaced by the composite one.

A lot-less movement on a balance row that has a lot is the one mismatch left to the statements
(a foreign key with a NULL column is not checked in PostgreSQL 15); the books check finds it
(`movement_lot_is_its_balances` in warehouse.invariants).

Revision ID: 0006_dimension_keys
Revises: 0005_idempotency_expiry
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006_dimension_keys"
down_revision = "0005_idempotency_expiry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE location ADD CONSTRAINT uq_location_id_warehouse UNIQUE (id, warehouse_id);
        ALTER TABLE lot ADD CONSTRAINT uq_lot_id_sku UNIQUE (id, sku_id);
        ALTER TABLE stock_balance
            ADD CONSTRAINT fk_stock_balance_location_in_warehouse
                FOREIGN KEY (location_id, warehouse_id) REFERENCES location (id, warehouse_id),
            ADD CONSTRAINT fk_stock_balance_lot_of_sku
                FOREIGN KEY (lot_id, sku_id) REFERENCES lot (id, sku_id),
            ADD CONSTRAINT uq_stock_balance_dimensions UNIQUE (id, warehouse_id, location_id, sku_id),
            ADD CONSTRAINT uq_stock_balance_id_lot UNIQUE (id, lot_id);
        ALTER TABLE stock_movement
            ADD CONSTRAINT fk_stock_movement_balance_dimensions
                FOREIGN KEY (balance_id, warehouse_id, location_id, sku_id)
                REFERENCES stock_balance (id, warehouse_id, location_id, sku_id),
            ADD CONSTRAINT fk_stock_movement_balance_lot
                FOREIGN KEY (balance_id, lot_id) REFERENCES stock_balance (id, lot_id);
        ALTER TABLE stock_movement DROP CONSTRAINT IF EXISTS stock_movement_balance_id_fkey;
        ALTER TABLE adjustment_order_line
            ADD CONSTRAINT fk_adjustment_order_line_lot_of_sku FOREIGN KEY (lot_id, sku_id) REFERENCES lot (id, sku_id);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE adjustment_order_line DROP CONSTRAINT fk_adjustment_order_line_lot_of_sku;
        ALTER TABLE stock_movement ADD CONSTRAINT stock_movement_balance_id_fkey
            FOREIGN KEY (balance_id) REFERENCES stock_balance (id);
        ALTER TABLE stock_movement DROP CONSTRAINT fk_stock_movement_balance_lot,
                                   DROP CONSTRAINT fk_stock_movement_balance_dimensions;
        ALTER TABLE stock_balance DROP CONSTRAINT uq_stock_balance_id_lot,
                                  DROP CONSTRAINT uq_stock_balance_dimensions,
                                  DROP CONSTRAINT fk_stock_balance_lot_of_sku,
                                  DROP CONSTRAINT fk_stock_balance_location_in_warehouse;
        ALTER TABLE lot DROP CONSTRAINT uq_lot_id_sku;
        ALTER TABLE location DROP CONSTRAINT uq_location_id_warehouse;
        """
    )
