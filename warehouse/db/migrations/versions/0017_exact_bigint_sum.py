"""cangflow_sum(bigint): a sum of bigints that stays a bigint while it adds up.

PostgreSQL's sum(bigint) adds up in a numeric (or 128-bit) state allocated apart for each
group, which is most of the cost of a hash aggregate with a million groups: the reconciliation
diff (`warehouse.reconcile.compare`) groups the feed's rows and the WMS rows by key, a million
of each, and spent about 0.2 s of its 1.4 s in that state. This aggregate keeps a bigint, passed
by value, added with int8pl, which raises "bigint out of range" on overflow: the same answers
as the built-in sum cast back to bigint, except that a running total past 9.2 x 10^18 units
fails even where later rows would have brought the sum back in range (the built-in sum's cast
failed only on the final sum). No rows (or only NULLs) sum to NULL, as sum's do.

Revision ID: 0017_exact_bigint_sum
Revises: 0016_statement_guard
Create Date: 2026-12-07
"""

from alembic import op

revision = "0017_exact_bigint_sum"
down_revision = "0016_statement_guard"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE AGGREGATE cangflow_sum(bigint) "
        "(SFUNC = int8pl, STYPE = bigint, COMBINEFUNC = int8pl, PARALLEL = SAFE)"
    )


def downgrade() -> None:
    op.execute("DROP AGGREGATE cangflow_sum(bigint)")
