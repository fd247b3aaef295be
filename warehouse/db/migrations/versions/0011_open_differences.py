"""Open differences: an adjustment order line can be superseded by a newer run, and a line sent
to the ERP can be acknowledged.

A difference has an identity, (warehouse, sku, lot). A newer run that finds it again supersedes
the older line still waiting (`pending_approval`, or `for_erp` not yet acknowledged): its status
becomes `superseded` and `superseded_by_run` names the run, so the same standing difference is
never approved twice from the queue, nor sent to the ERP every night. `acknowledged` closes a
line the ERP confirmed (`cangflow adjustments ack`).

Revision ID: 0011_open_differences
Revises: 0010_history_closes_in_order
Create Date: 2026-12-04
"""

from alembic import op

revision = "0011_open_differences"
down_revision = "0010_history_closes_in_order"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE adjustment_order_line
            ADD COLUMN superseded_by_run bigint REFERENCES reconciliation_run (id),
            ADD COLUMN acknowledged_at timestamptz,
            DROP CONSTRAINT ck_adjustment_order_line_status,
            ADD CONSTRAINT ck_adjustment_order_line_status CHECK (status IN (
                'for_erp', 'acknowledged', 'pending_approval', 'approved', 'applied', 'rejected', 'failed',
                'superseded'));
        -- The lines still open for an identity, found by each new run.
        CREATE INDEX ix_adjustment_order_line_open ON adjustment_order_line (warehouse_id, sku_id, lot_id)
            WHERE status IN ('pending_approval', 'for_erp');
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX ix_adjustment_order_line_open;
        UPDATE adjustment_order_line SET status = 'rejected' WHERE status = 'superseded';
        UPDATE adjustment_order_line SET status = 'for_erp' WHERE status = 'acknowledged';
        ALTER TABLE adjustment_order_line
            DROP CONSTRAINT ck_adjustment_order_line_status,
            ADD CONSTRAINT ck_adjustment_order_line_status CHECK (status IN (
                'for_erp', 'pending_approval', 'approved', 'applied', 'rejected', 'failed')),
            DROP COLUMN acknowledged_at,
            DROP COLUMN superseded_by_run;
        """
    )
