"""Idempotency keys expire: an index on created_at, so the rollover's pruning finds the
expired keys in batches without scanning every key.

Revision ID: 0005_idempotency_expiry
Revises: 0004_reconciliation
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005_idempotency_expiry"
down_revision = "0004_reconciliation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_idempotency_key_created_at ON idempotency_key (created_at)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_idempotency_key_created_at")
