"""Retired history refuses rows in the database too. The default partitions catch the rows of
months that have no partition of their own: months never made yet, and retired months (detached
into `archive`, or dumped and dropped). A row dated in or before the newest retired month would
bring back history nobody keeps: a row trigger on each default partition refuses it, also for
rows routed through the parent, with SQLSTATE CGH02 (the month as DETAIL, the first month still
kept as HINT).

Revision ID: 0007_retired_history
Revises: 0006_dimension_keys
Create Date: 2026-12-01
"""

from alembic import op

revision = "0007_retired_history"
down_revision = "0006_dimension_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION cangflow_refuse_retired_history() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            day date;
            newest_retired date;
        BEGIN
            -- TG_ARGV[0] names the table's date column; each branch is compiled only when taken.
            IF TG_ARGV[0] = 'snapshot_date' THEN
                day := NEW.snapshot_date;
            ELSE
                day := (NEW.occurred_at AT TIME ZONE 'UTC')::date;
            END IF;
            SELECT max(month) INTO newest_retired FROM history_month WHERE state IN ('archived', 'dropped');
            IF newest_retired IS NOT NULL AND day < (newest_retired + interval '1 month')::date THEN
                RAISE EXCEPTION 'stock history for % is retired (% on %); the oldest month kept is %',
                    to_char(day, 'YYYY-MM'), TG_OP, TG_TABLE_NAME,
                    to_char(newest_retired + interval '1 month', 'YYYY-MM')
                    USING ERRCODE = 'CGH02', DETAIL = to_char(day, 'YYYY-MM'),
                          HINT = to_char(newest_retired + interval '1 month', 'YYYY-MM');
            END IF;
            RETURN NEW;
        END
        $$;
        CREATE TRIGGER refuse_retired_history BEFORE INSERT OR UPDATE ON stock_movement_default
            FOR EACH ROW EXECUTE FUNCTION cangflow_refuse_retired_history('occurred_at');
        CREATE TRIGGER refuse_retired_history BEFORE INSERT OR UPDATE ON stock_snapshot_default
            FOR EACH ROW EXECUTE FUNCTION cangflow_refuse_retired_history('snapshot_date');
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER refuse_retired_history ON stock_snapshot_default;
        DROP TRIGGER refuse_retired_history ON stock_movement_default;
        DROP FUNCTION cangflow_refuse_retired_history();
        """
    )
