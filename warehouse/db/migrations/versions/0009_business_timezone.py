"""The business time zone, kept by the database itself.

`business_calendar` holds one row: the IANA zone whose days and months the database's history
is in (snapshot days, the months of the ledger partitions, closing and retention). A database
migrated from before this revision kept UTC days, so the row starts as 'UTC'; the application
adopts its CANGFLOW_BUSINESS_TIMEZONE on a database without history and refuses to run on one
whose history is in another zone (`warehouse.history.zone`).

The retired-history trigger reads the zone from it, so a row inserted by any client lands in
the month of the business zone. `cangflow_day_start(day, zone)` is the first instant of a
business day, as `warehouse.history.calendar.day_start` computes it: PostgreSQL reads an ambiguous
local time (a DST change from 01:00 back to 00:00) as the later instant, while the day begins
at the earlier one.

Revision ID: 0009_business_timezone
Revises: 0008_snapshot_digests
Create Date: 2026-12-05
"""

from alembic import op

revision = "0009_business_timezone"
down_revision = "0008_snapshot_digests"
branch_labels = None
depends_on = None

_RETIRED_HISTORY = """
CREATE OR REPLACE FUNCTION cangflow_refuse_retired_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    day date;
    newest_retired date;
BEGIN
    -- TG_ARGV[0] names the table's date column; each branch is compiled only when taken.
    IF TG_ARGV[0] = 'snapshot_date' THEN
        day := NEW.snapshot_date;
    ELSE
        day := (NEW.occurred_at AT TIME ZONE {zone})::date;
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
"""


def upgrade() -> None:
    op.execute(
        """
        -- One row (the key can only be true): the zone of the database's days and months.
        CREATE TABLE business_calendar (
            one_row boolean PRIMARY KEY DEFAULT true,
            zone text NOT NULL,
            changed_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_business_calendar_one_row CHECK (one_row)
        );
        INSERT INTO business_calendar (zone) VALUES ('UTC');

        -- The first instant of `day` in `zone`. Where a DST change makes local midnight occur
        -- twice, the earlier one (PostgreSQL's reading of the local time is the later one);
        -- where it skips midnight, the offset before the change, as PostgreSQL reads it (the
        -- day then starts at the first local time that exists).
        CREATE FUNCTION cangflow_day_start(day date, zone text) RETURNS timestamptz
        LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
            SELECT CASE WHEN early < late AND CAST(early AT TIME ZONE zone AS date) = day THEN early ELSE late END
            FROM (
                SELECT late,
                       -- local midnight at the UTC offset in force a day before
                       (CAST(day AS timestamp) - ((late - interval '24 hours') AT TIME ZONE zone
                                                  - (late - interval '24 hours') AT TIME ZONE 'UTC')) AT TIME ZONE 'UTC' AS early
                FROM (SELECT CAST(day AS timestamp) AT TIME ZONE zone AS late) AS later
            ) AS candidates
        $$;
        """
    )
    op.execute(_RETIRED_HISTORY.format(zone="(SELECT zone FROM business_calendar)"))


def downgrade() -> None:
    op.execute(_RETIRED_HISTORY.format(zone="'UTC'"))
    op.execute(
        """
        DROP FUNCTION cangflow_day_start(date, text);
        DROP TABLE business_calendar;
        """
    )
