"""Queries tests use to look at what an operation wrote."""

from sqlalchemy import text


def ledger_counts(db) -> tuple[int, int, int]:
    """(movements, outbox messages, idempotency keys) in the whole database."""
    with db.session() as session:
        return session.execute(
            text(
                "SELECT (SELECT count(*) FROM stock_movement), (SELECT count(*) FROM outbox_message), "
                "(SELECT count(*) FROM idempotency_key)"
            )
        ).one()


def movements_of(db, operation_id: int) -> list:
    with db.session() as session:
        return session.execute(
            text(
                "SELECT movement_type, qty, reserved_qty FROM stock_movement WHERE operation_id = :op ORDER BY id"
            ),
            {"op": operation_id},
        ).all()


def outbox_of(db, operation_id: int) -> list:
    with db.session() as session:
        return session.execute(
            text("SELECT topic, payload FROM outbox_message WHERE operation_id = :op"),
            {"op": operation_id},
        ).all()


def violations(db) -> list:
    from warehouse import invariants

    with db.session() as session:
        return invariants.check(session)


# Every built day's rows against a direct sum of the ledger up to the end of that (UTC) day:
# the count of keys that differ.
SNAPSHOTS_AGAINST_LEDGER = text("""
WITH direct AS (
    SELECT d.snapshot_date, m.balance_id, sum(m.qty) AS on_hand, sum(m.reserved_qty) AS reserved
    FROM snapshot_day d JOIN stock_movement m ON m.occurred_at < (d.snapshot_date + 1)::timestamp AT TIME ZONE 'UTC'
    GROUP BY 1, 2 HAVING sum(m.qty) <> 0 OR sum(m.reserved_qty) <> 0
)
SELECT count(*) FROM direct FULL JOIN stock_snapshot s USING (snapshot_date, balance_id)
WHERE direct.on_hand IS DISTINCT FROM s.on_hand OR direct.reserved IS DISTINCT FROM s.reserved
""")
