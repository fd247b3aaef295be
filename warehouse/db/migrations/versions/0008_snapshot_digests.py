"""What a verified snapshot day held, and when the books were last checked in full.

`snapshot_day.content_digest` is an order-independent hash of the day's rows, taken when the day
passed its chain check. A row altered afterwards (by hand, by a restore) no longer matches it, so
a day that later days were built on can be proven wrong without trusting the chain it is part of.
`books_check` records each check of the books: a full one (every retained snapshot against the
ledger, the whole ledger against the balances), or an incremental one (what was recorded since
the last passing check), with the instant it covered up to, so the next incremental check starts
there and the nightly knows when a full check is due.

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
        "books_check",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column(
            "checked_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("business_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("covered_upto", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.CheckConstraint("kind IN ('full', 'incremental')", name="ck_books_check_kind"),
    )
    op.create_index("ix_books_check_kind_ok", "books_check", ["kind", "ok", "id"])


def downgrade() -> None:
    op.drop_index("ix_books_check_kind_ok", table_name="books_check")
    op.drop_table("books_check")
    op.drop_column("snapshot_day", "content_digest")
