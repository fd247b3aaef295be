"""cangflow_day_start as one expression the planner inlines.

Migration 0009's version read its two candidate instants from nested sub-SELECTs and was
STRICT: PostgreSQL inlines a SQL function only when its body is a single expression without
FROM, and a STRICT one only when that expression is itself strict (a CASE is not). Not inlined,
the function ran through the SQL-function executor, which plans its body again on every
execution of the calling statement: 0.15-0.2 ms of each as-of read (`warehouse.snapshots.read`),
whose own work is about as much. The same instants, written out as one expression (NULL in
gives NULL out, as STRICT did); the test against `calendar.day_start` on every day of several
zones holds both versions to the same answers.

Revision ID: 0015_inlined_day_start
Revises: 0014_staging_schema
Create Date: 2026-12-06
"""

from alembic import op

revision = "0015_inlined_day_start"
down_revision = "0014_staging_schema"
branch_labels = None
depends_on = None

# Local midnight read by PostgreSQL (the later instant where midnight occurs twice).
_LATE = "(CAST(day AS timestamp) AT TIME ZONE zone)"
# Local midnight at the UTC offset in force a day before.
_EARLY = (
    f"((CAST(day AS timestamp) - (({_LATE} - interval '24 hours') AT TIME ZONE zone"
    f" - ({_LATE} - interval '24 hours') AT TIME ZONE 'UTC')) AT TIME ZONE 'UTC')"
)

_INLINED = f"""
CREATE OR REPLACE FUNCTION cangflow_day_start(day date, zone text) RETURNS timestamptz
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT CASE WHEN {_EARLY} < {_LATE} AND CAST({_EARLY} AT TIME ZONE zone AS date) = day
                THEN {_EARLY} ELSE {_LATE} END
$$;
"""

_SUB_SELECTS = """
CREATE OR REPLACE FUNCTION cangflow_day_start(day date, zone text) RETURNS timestamptz
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN early < late AND CAST(early AT TIME ZONE zone AS date) = day THEN early ELSE late END
    FROM (
        SELECT late,
               (CAST(day AS timestamp) - ((late - interval '24 hours') AT TIME ZONE zone
                                          - (late - interval '24 hours') AT TIME ZONE 'UTC')) AT TIME ZONE 'UTC' AS early
        FROM (SELECT CAST(day AS timestamp) AT TIME ZONE zone AS late) AS later
    ) AS candidates
$$;
"""


def upgrade() -> None:
    op.execute(_INLINED)


def downgrade() -> None:
    op.execute(_SUB_SELECTS)
