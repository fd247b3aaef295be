"""Reconciliation feeds night after night: a run knows its scope and its feed's shape, and a
feed that is too old or already reconciled ends as `stale`.

- `reconciliation_run.warehouse_ids`: the warehouses the feed covers (its scope). Feeds of one
  scope are compared with each other (an older feed is refused, a far smaller one is refused
  as truncated); the GIN index finds the done runs of an overlapping scope.
- `reconciliation_run.profile`: the loaded feed's shape (rows, share of zero quantities, mean
  quantity), the yardstick the next feed of the same scope is measured against.
- status `stale`: the feed's as_of is older than the allowed age, or the feed was reconciled
  before; nothing was compared or changed.

Revision ID: 0013_reconciliation_feeds
Revises: 0012_reconciliation_brake
Create Date: 2026-12-05
"""

from alembic import op

revision = "0013_reconciliation_feeds"
down_revision = "0012_reconciliation_brake"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE reconciliation_run
            ADD COLUMN warehouse_ids bigint[],
            ADD COLUMN profile jsonb,
            DROP CONSTRAINT ck_reconciliation_run_status,
            ADD CONSTRAINT ck_reconciliation_run_status
                CHECK (status IN ('loading', 'compared', 'done', 'rejected', 'stale'));
        CREATE INDEX ix_reconciliation_run_scope ON reconciliation_run USING gin (warehouse_ids)
            WHERE status = 'done';
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX ix_reconciliation_run_scope;
        UPDATE reconciliation_run SET status = 'rejected', error = 'stale feed' WHERE status = 'stale';
        ALTER TABLE reconciliation_run
            DROP CONSTRAINT ck_reconciliation_run_status,
            ADD CONSTRAINT ck_reconciliation_run_status CHECK (status IN ('loading', 'compared', 'done', 'rejected')),
            DROP COLUMN profile,
            DROP COLUMN warehouse_ids;
        """
    )
