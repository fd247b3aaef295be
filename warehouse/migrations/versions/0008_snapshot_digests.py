"""What a verified snapshot day held, and when the books were last checked in full.

`snapshot_day.content_digest` is an order-independent hash of the day's rows, taken when the day
passed its chain check. A row altered afterwards (by hand, by a restore) no longer matches it, so
a day that later days were built on can be proven wrong without trusting the chain it is part of.
`full_check` records each full check of the books, so the nightly knows when the next is due.

Revision ID: 0008_snapshot_digests
Revises: 0007_retired_history
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_snapshot_digests"
down_revision = "0007_retired_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("snapshot_day", sa.Column("content_digest", sa.Numeric(), nullable=True))
    op.create_table(
        "full_check",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
    )
    op.create_index("ix_full_check_checked_at", "full_check", ["checked_at"])


def downgrade() -> None:
    op.drop_index("ix_full_check_checked_at", table_name="full_check")
    op.drop_table("full_check")
    op.drop_column("snapshot_day", "content_digest")
