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


# The two paths a take runs on: in the caller's Session, or direct (its own transaction).
TAKE_PATHS = ("session", "direct")
HANDOVERS = "cangflow_stock_direct_handovers_total"


def take_on(path: str, db):
    """`take(session, operation, **arguments)` on `path`: the Session path runs in `session`;
    the direct path ignores it and commits on its own connection of `db`'s pool, with the ids
    of its SKUs and bins cached first, so that it runs as in a process that has met them
    before (its statement and the commit, no lookup; none of these takes names a lot), and
    never hands the request over to the Session path."""
    from warehouse import stock
    from warehouse.metrics import sinks as metrics
    from warehouse.stock.resolve import Item, resolve

    direct = stock.DirectStock(db)

    def take(session, operation: str, **arguments):
        if path == "session":
            return getattr(stock, operation)(session, **arguments)
        lines = arguments.get("lines") or [(arguments["sku"], 0, arguments.get("location"))]
        with db.session() as cached:
            resolve(cached, arguments["warehouse"], [Item(*line[:1], *line[2:3]) for line in lines])
        with metrics.use(metrics.RecordingMetrics()) as recorded:
            try:
                return getattr(direct, operation)(**arguments)
            finally:
                handovers = [key for key in recorded.counters if key[0] == HANDOVERS]
                assert not handovers, f"the direct path handed the request over: {handovers}"

    return take
