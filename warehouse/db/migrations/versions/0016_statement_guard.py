"""cangflow_statement_failed(message): a stock statement fails itself when it changed a
different number of balance rows than it planned.

The allocating statement of the direct path (an order, a line FEFO spreads over rows) ran in a
transaction of its own so that the caller could compare the statement's planned and changed
row counts and roll back before COMMIT. That cost a second round trip per order. The statement
now makes the comparison itself, calling this function when the counts differ: the error
aborts the statement, so it can run as one autocommit statement and leave nothing behind.
SQLSTATE CGS01 (`warehouse.stock.execute`). VOLATILE, so that the planner never evaluates it
ahead of the CASE that guards it.

Revision ID: 0016_statement_guard
Revises: 0015_inlined_day_start
Create Date: 2026-12-06
"""

from alembic import op

revision = "0016_statement_guard"
down_revision = "0015_inlined_day_start"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE FUNCTION cangflow_statement_failed(message text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'CGS01', MESSAGE = message;
END
$$;
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION cangflow_statement_failed(text)")
