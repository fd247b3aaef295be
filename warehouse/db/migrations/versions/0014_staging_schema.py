"""A schema of its own for the reconciliation's staging tables.

Each attempt COPYs its feed into a scratch table of its own. Under least privilege
(`warehouse.db.roles`) the app role may create tables only here, never among the tables of
record. Staging tables a killed attempt left in `public` move here, where the sweep finds them.

Revision ID: 0014_staging_schema
Revises: 0013_reconciliation_feeds
Create Date: 2026-12-06
"""

from alembic import op

revision = "0014_staging_schema"
down_revision = "0013_reconciliation_feeds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        r"""
        CREATE SCHEMA IF NOT EXISTS cangflow_staging;
        DO $$
        DECLARE leftover text;
        BEGIN
            FOR leftover IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'erp\_feed\_%'
            LOOP
                EXECUTE format('ALTER TABLE public.%I SET SCHEMA cangflow_staging', leftover);
            END LOOP;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA IF EXISTS cangflow_staging CASCADE")
