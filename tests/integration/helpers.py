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
            text("SELECT movement_type, qty, reserved_qty FROM stock_movement WHERE operation_id = :op ORDER BY id"),
            {"op": operation_id},
        ).all()


def outbox_of(db, operation_id: int) -> list:
    with db.session() as session:
        return session.execute(
            text("SELECT topic, payload FROM outbox_message WHERE operation_id = :op"), {"op": operation_id}
        ).all()


def violations(db) -> list:
    from warehouse import invariants

    with db.session() as session:
        return invariants.check(session)
