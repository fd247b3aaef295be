"""History before a closed month is closed too, also where it has no partition of its own.

Months close in order, so a month older than a closed one is closed or retired, except the
months that never got a ledger partition: those before the first night (the rollover premakes
last month onward) that nobody booked into. A row dated there lands in the default partition,
and until now only retired months were refused there. Such a row would change the closing
stock of every later day, including the closed month's snapshots, which refuse the rebuild:
the snapshot runs would fail every night. The default partitions' trigger now refuses a row
dated before the newest closed month with SQLSTATE CGH03 (the month as DETAIL, the closed month
as HINT); a reopened month keeps its partition, so this never blocks a correction.

Revision ID: 0010_history_closes_in_order
Revises: 0009_business_timezone
Create Date: 2026-12-04
"""

from alembic import op

revision = "0010_history_closes_in_order"
down_revision = "0009_business_timezone"
branch_labels = None
depends_on = None

_DEFAULT_PARTITION_GUARD = """
CREATE OR REPLACE FUNCTION cangflow_refuse_retired_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    day date;
    newest_retired date;
    newest_closed date;
BEGIN
    -- TG_ARGV[0] names the table's date column; each branch is compiled only when taken.
    IF TG_ARGV[0] = 'snapshot_date' THEN
        day := NEW.snapshot_date;
    ELSE
        day := (NEW.occurred_at AT TIME ZONE (SELECT zone FROM business_calendar))::date;
    END IF;
    SELECT max(month) INTO newest_retired FROM history_month WHERE state IN ('archived', 'dropped');
    IF newest_retired IS NOT NULL AND day < (newest_retired + interval '1 month')::date THEN
        RAISE EXCEPTION 'stock history for % is retired (% on %); the oldest month kept is %',
            to_char(day, 'YYYY-MM'), TG_OP, TG_TABLE_NAME,
            to_char(newest_retired + interval '1 month', 'YYYY-MM')
            USING ERRCODE = 'CGH02', DETAIL = to_char(day, 'YYYY-MM'),
                  HINT = to_char(newest_retired + interval '1 month', 'YYYY-MM');
    END IF;
    {closed_guard}
    RETURN NEW;
END
$$;
"""

_CLOSED_GUARD = """
    SELECT max(month) INTO newest_closed FROM history_month WHERE state = 'closed';
    IF newest_closed IS NOT NULL AND day < newest_closed THEN
        RAISE EXCEPTION 'stock history for % is closed: it is older than %, a closed month, and history closes in order (% on %)',
            to_char(day, 'YYYY-MM'), to_char(newest_closed, 'YYYY-MM'), TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'CGH03', DETAIL = to_char(day, 'YYYY-MM'), HINT = to_char(newest_closed, 'YYYY-MM');
    END IF;
"""


def upgrade() -> None:
    op.execute(_DEFAULT_PARTITION_GUARD.replace("{closed_guard}", _CLOSED_GUARD))


def downgrade() -> None:
    op.execute(_DEFAULT_PARTITION_GUARD.replace("{closed_guard}", ""))
