"""The blast-radius brake of a reconciliation run: a run over a limit holds its lines.

`reconciliation_run.brake` says which limit the run went over and by how much (NULL: none);
its ERP-truth lines are then `held`, applied only when a person approves them (`cangflow
adjustments approve --run N`), whatever the auto-approval limit. Held lines are open, like the
ones waiting for approval, so a newer run supersedes them.

Revision ID: 0012_reconciliation_brake
Revises: 0011_open_differences
Create Date: 2026-12-04
"""

from alembic import op

revision = "0012_reconciliation_brake"
down_revision = "0011_open_differences"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE reconciliation_run ADD COLUMN brake text;
        ALTER TABLE adjustment_order_line
            DROP CONSTRAINT ck_adjustment_order_line_status,
            ADD CONSTRAINT ck_adjustment_order_line_status CHECK (status IN (
                'for_erp', 'acknowledged', 'pending_approval', 'held', 'approved', 'applied', 'rejected', 'failed',
                'superseded'));
        DROP INDEX ix_adjustment_order_line_open;
        CREATE INDEX ix_adjustment_order_line_open ON adjustment_order_line (warehouse_id, sku_id, lot_id)
            WHERE status IN ('pending_approval', 'held', 'for_erp');
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX ix_adjustment_order_line_open;
        CREATE INDEX ix_adjustment_order_line_open ON adjustment_order_line (warehouse_id, sku_id, lot_id)
            WHERE status IN ('pending_approval', 'for_erp');
        UPDATE adjustment_order_line SET status = 'pending_approval' WHERE status = 'held';
        ALTER TABLE adjustment_order_line
            DROP CONSTRAINT ck_adjustment_order_line_status,
            ADD CONSTRAINT ck_adjustment_order_line_status CHECK (status IN (
                'for_erp', 'acknowledged', 'pending_approval', 'approved', 'applied', 'rejected', 'failed',
                'superseded'));
        ALTER TABLE reconciliation_run DROP COLUMN brake;
        """
    )
