"""The direct stock path (`DirectStock`): a take that is its caller's whole transaction, one
autocommit statement on a pooled connection. It must write exactly what the Session path writes
(balance, ledger, outbox, key), refuse the same way, agree with the Session path on every key,
and hand the connection back as Sessions expect it."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import text

import warehouse
from tests.integration.helpers import (
    HANDOVERS,
    ledger_counts,
    movements_of,
    outbox_of,
    violations,
)
from warehouse import stock
from warehouse.errors import IdempotencyConflict, InsufficientStock, UnknownItem

pytestmark = pytest.mark.integration


def key_row(db, key: str):
    with db.session() as s:
        return s.execute(
            text("SELECT operation, operation_id, result FROM idempotency_key WHERE key = :key"),
            {"key": key},
        ).one_or_none()


def test_a_direct_deduction_writes_balance_ledger_outbox_and_key_in_one_statement(world):
    sku = world.stocked_sku(10)
    direct = stock.DirectStock(world.db)
    before = ledger_counts(world.db)
    change = direct.deduct(warehouse=world.warehouse, sku=sku, qty=4, key=f"{sku}-pick")
    assert (change.operation, change.replayed, change.on_hand_change) == ("deduct", False, -4)
    assert change.lines[0].on_hand == 6 and world.on_hand(sku) == 6
    assert ledger_counts(world.db) == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert movements_of(world.db, change.operation_id) == [("deduction", -4, 0)]
    [(topic, payload)] = outbox_of(world.db, change.operation_id)
    assert topic == "stock.changed" and payload["key"] == f"{sku}-pick"
    row = key_row(world.db, f"{sku}-pick")
    assert (row.operation, row.operation_id) == ("deduct", change.operation_id)
    assert row.result[0]["qty"] == -4
    assert violations(world.db) == []


def test_a_repeated_key_replays_the_first_result_on_either_path(world):
    sku = world.stocked_sku(10)
    direct = stock.DirectStock(world.db)
    first = direct.deduct(warehouse=world.warehouse, sku=sku, qty=3, key=f"{sku}-a")
    again = direct.deduct(warehouse=world.warehouse, sku=sku, qty=3, key=f"{sku}-a")
    with world.db.session() as s:  # the Session path computes the same request hash
        by_session = stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=3, key=f"{sku}-a")
    assert again.replayed and by_session.replayed
    assert again.operation_id == by_session.operation_id == first.operation_id
    assert again.lines == first.lines
    with world.db.session() as s:  # and the other way round
        applied = stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=2, key=f"{sku}-b")
    replayed = direct.deduct(warehouse=world.warehouse, sku=sku, qty=2, key=f"{sku}-b")
    assert replayed.replayed and replayed.operation_id == applied.operation_id
    assert world.on_hand(sku) == 5


def test_a_key_reused_for_another_request_is_a_conflict_and_applies_nothing(world):
    sku = world.stocked_sku(10)
    direct = stock.DirectStock(world.db)
    direct.deduct(warehouse=world.warehouse, sku=sku, qty=1, key=f"{sku}-k")
    with pytest.raises(IdempotencyConflict, match="first used for a different request"):
        direct.deduct(warehouse=world.warehouse, sku=sku, qty=2, key=f"{sku}-k")
    with pytest.raises(IdempotencyConflict):
        direct.reserve(warehouse=world.warehouse, sku=sku, qty=1, key=f"{sku}-k")
    assert world.on_hand(sku) == 9 and world.available(sku) == 9


def test_a_refusal_names_the_shortage_writes_nothing_and_leaves_the_key_free(world):
    sku = world.stocked_sku(5)
    direct = stock.DirectStock(world.db)
    before = ledger_counts(world.db)
    with pytest.raises(InsufficientStock, match="asked 8, available 5"):
        direct.deduct(warehouse=world.warehouse, sku=sku, qty=8, key=f"{sku}-short")
    assert ledger_counts(world.db) == before and key_row(world.db, f"{sku}-short") is None
    with pytest.raises(UnknownItem, match="unknown sku 'NO-SUCH-SKU'"):
        direct.deduct(warehouse=world.warehouse, sku="NO-SUCH-SKU", qty=1)
    world.receive(sku, 5)
    change = direct.deduct(warehouse=world.warehouse, sku=sku, qty=8, key=f"{sku}-short")
    assert not change.replayed and world.on_hand(sku) == 2


def test_a_pick_fefo_spreads_over_two_lots_takes_the_earliest_expiry_first(world, recorded_metrics):
    sku = world.add_sku(lots={"OLD": date(2030, 1, 1), "NEW": date(2031, 1, 1)})
    world.receive(sku, 3, location=world.locations[1], lot="NEW")
    world.receive(sku, 2, location=world.locations[0], lot="OLD")
    direct = stock.DirectStock(world.db)
    direct.deduct(warehouse=world.warehouse, sku=sku, qty=1)  # OLD's row alone: 1 left there
    change = direct.deduct(warehouse=world.warehouse, sku=sku, qty=3, key=f"{sku}-fefo")
    assert [key for key in recorded_metrics.counters if key[0] == HANDOVERS] == []
    # FEFO empties the earlier expiry first (the lines come in movement id order).
    assert sorted((line.lot, line.qty) for line in change.lines) == [("NEW", -2), ("OLD", -1)]
    assert key_row(world.db, f"{sku}-fefo").operation_id == change.operation_id
    assert world.on_hand(sku) == 1
    assert violations(world.db) == []


def test_an_order_runs_directly_all_or_nothing_once_its_ids_are_cached(world, one_connection):
    skus = [world.stocked_sku(5) for _ in range(3)]
    direct = stock.DirectStock(one_connection)
    lines = [(sku, 2) for sku in skus]
    direct.deduct_order(warehouse=world.warehouse, lines=lines)  # looks the ids up, caches them
    with one_connection.direct_connection() as connection:
        prepared_before = connection.execute("SELECT count(*) FROM pg_prepared_statements")
        prepared_before = prepared_before.fetchone()[0]
    before = ledger_counts(world.db)
    with pytest.raises(InsufficientStock, match="asked 4, available 3"):
        direct.deduct_order(warehouse=world.warehouse, lines=[(skus[0], 1), (skus[1], 4)])
    assert ledger_counts(world.db) == before
    assert [world.on_hand(sku) for sku in skus] == [3, 3, 3]
    with one_connection.direct_connection() as connection:
        prepared = connection.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert prepared[0] >= prepared_before > 0, "the refusal dropped the prepared statements"
    change = direct.deduct_order(warehouse=world.warehouse, lines=lines, key=f"{skus[0]}-o")
    assert sorted(line.on_hand for line in change.lines) == [1, 1, 1]
    again = direct.deduct_order(warehouse=world.warehouse, lines=lines, key=f"{skus[0]}-o")
    assert again.replayed and again.operation_id == change.operation_id
    assert [world.on_hand(sku) for sku in skus] == [1, 1, 1]
    assert violations(world.db) == []


def test_an_order_of_codes_this_database_has_not_met_runs_directly_and_caches_their_ids(
    world, database_url, recorded_metrics
):
    """A fresh process (a new Database: no ids cached) looks the codes up in the order's own
    transaction instead of handing it to the Session path; a code that names nothing still
    goes there, which names it, and nothing is written."""
    skus = [world.stocked_sku(5) for _ in range(3)]
    fresh = warehouse.connect(database_url, pool_size=1)
    try:
        direct = stock.DirectStock(fresh)
        change = direct.deduct_order(warehouse=world.warehouse, lines=[(sku, 2) for sku in skus])
        assert sorted(line.sku for line in change.lines) == sorted(skus)
        assert [world.on_hand(sku) for sku in skus] == [3, 3, 3]
        assert [key for key in recorded_metrics.counters if key[0] == HANDOVERS] == []
        assert all(fresh.ids.get(("sku", sku)) is not None for sku in skus)
        assert fresh.ids.get(("warehouse", world.warehouse)) is not None

        before = ledger_counts(world.db)
        with pytest.raises(UnknownItem, match="NO-SUCH-SKU"):
            direct.deduct_order(warehouse=world.warehouse, lines=[(skus[0], 1), ("NO-SUCH-SKU", 1)])
        assert (
            recorded_metrics.value(HANDOVERS, operation="deduct_order", reason="unknown_code") == 1
        )
        assert fresh.ids.get(("sku", "NO-SUCH-SKU")) is None
        assert ledger_counts(world.db) == before and world.on_hand(skus[0]) == 3
    finally:
        fresh.dispose()
    assert violations(world.db) == []


def test_reserve_and_release_directly(world):
    sku = world.stocked_sku(10)
    direct = stock.DirectStock(world.db)
    direct.reserve(warehouse=world.warehouse, sku=sku, qty=6)
    with pytest.raises(InsufficientStock, match="asked 7, available 6"):
        direct.release(warehouse=world.warehouse, sku=sku, qty=7)
    direct.release(warehouse=world.warehouse, sku=sku, qty=4)
    assert (world.on_hand(sku), world.available(sku)) == (10, 8)
    assert violations(world.db) == []


def test_the_connection_goes_back_to_the_pool_ready_for_a_session_transaction(
    world, one_connection
):
    """After a direct call (autocommit) the same connection must roll back a Session's work."""
    sku = world.stocked_sku(10)
    stock.DirectStock(one_connection).deduct(warehouse=world.warehouse, sku=sku, qty=1)
    with pytest.raises(RuntimeError, match="give up"), one_connection.session() as s:
        stock.receive(s, warehouse=world.warehouse, sku=sku, qty=100, location=world.locations[0])
        raise RuntimeError("give up")
    assert world.on_hand(sku) == 9


def test_a_committed_direct_take_tells_the_stock_hooks_and_the_metrics(world, recorded_metrics):
    sku = world.stocked_sku(3)
    seen: list[set] = []
    remove = world.db.on_stock_committed(seen.append)
    try:
        direct = stock.DirectStock(world.db)
        direct.deduct(warehouse=world.warehouse, sku=sku, qty=2)
        with pytest.raises(InsufficientStock):
            direct.deduct(warehouse=world.warehouse, sku=sku, qty=2)
    finally:
        remove()
    assert seen == [{(world.warehouse, sku)}]
    value = recorded_metrics.value
    assert value("cangflow_deductions_attempted_total", operation="deduct") == 2
    assert value("cangflow_deductions_succeeded_total", operation="deduct") == 1
    assert (
        value("cangflow_deductions_refused_total", operation="deduct", kind="insufficient_stock")
        == 1
    )


def test_a_repeat_replays_even_when_the_stock_left_no_longer_covers_it(world):
    """The statement would refuse (stock is short now), but the request applied before: a replay."""
    sku, other = world.stocked_sku(5), world.stocked_sku(5)
    direct = stock.DirectStock(world.db)
    pick = direct.deduct(warehouse=world.warehouse, sku=sku, qty=4, key=f"{sku}-p")
    order = direct.deduct_order(
        warehouse=world.warehouse, lines=[(sku, 1), (other, 5)], key=f"{sku}-o"
    )
    assert direct.deduct(warehouse=world.warehouse, sku=sku, qty=4, key=f"{sku}-p").replayed
    again = direct.deduct_order(
        warehouse=world.warehouse, lines=[(sku, 1), (other, 5)], key=f"{sku}-o"
    )
    assert again.replayed and again.operation_id == order.operation_id != pick.operation_id
    assert world.on_hand(sku) == 0 and world.on_hand(other) == 0


def test_a_connection_that_breaks_on_its_way_back_is_dropped_not_leaked(database_url, admin_dsn):
    import psycopg

    db = warehouse.connect(database_url, pool_size=1)
    try:
        with db.direct_connection() as connection:
            connection.execute("BEGIN")  # a transaction open when the block ends
            pid = connection.info.backend_pid
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert db.engine.pool.checkedout() == 0
        assert db._direct_lane.idle() == 0  # its rollback failed: closed, not kept
        with db.direct_connection() as connection:  # the lane makes a new one
            assert connection.info.backend_pid != pid
        with db.session() as s:
            assert s.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        db.dispose()


def test_a_direct_as_of_read_agrees_with_the_session_path_before_and_after_a_snapshot(world):
    """One autocommit statement: the same answers as `stock.on_hand(session, as_of=)` from the
    whole ledger (no snapshot before the day), then from a snapshot plus the movements after
    it, a backdated one (recorded after the snapshot was built) included."""
    from datetime import UTC, datetime, timedelta

    from warehouse import snapshots
    from warehouse.history.calendar import day_of

    sku = world.add_sku()
    now = datetime.now(UTC)
    bin_ = world.locations[0]

    def receive(qty, days_ago):
        with world.db.session() as s:
            stock.receive(
                s,
                warehouse=world.warehouse,
                sku=sku,
                qty=qty,
                location=bin_,
                occurred_at=now - timedelta(days=days_ago),
            )

    receive(10, 40)
    with world.db.session() as s:
        stock.deduct(
            s, warehouse=world.warehouse, sku=sku, qty=4, occurred_at=now - timedelta(days=1)
        )
    moments = [now - timedelta(days=d, hours=h) for d in (41, 39, 20, 3, 2, 0) for h in (0, 5)]
    direct = stock.DirectStock(world.db)

    def both(moment):
        with world.db.session() as s:
            by_session = stock.on_hand(s, warehouse=world.warehouse, sku=sku, as_of=moment)
        by_direct = direct.on_hand(warehouse=world.warehouse, sku=sku, as_of=moment)
        narrowed = direct.on_hand(warehouse=world.warehouse, sku=sku, location=bin_, as_of=moment)
        return by_session, by_direct, narrowed

    expected = [(0, 0, 0)] * 2 + [(10, 10, 10)] * 8 + [(6, 6, 6)] * 2
    assert [both(m) for m in moments] == expected
    with world.db.session() as s:
        snapshots.build_day(s, day_of(now - timedelta(days=10)))
    receive(5, 30)  # backdated behind the snapshot, recorded after it was built
    after = [both(m) for m in moments]
    assert after == [(0, 0, 0)] * 2 + [(10, 10, 10)] * 2 + [(15, 15, 15)] * 6 + [(11, 11, 11)] * 2


def test_a_direct_as_of_read_of_an_unknown_code_names_it(world):
    from datetime import UTC, datetime

    direct = stock.DirectStock(world.db)
    with pytest.raises(UnknownItem, match="NO-SUCH-SKU"):
        direct.on_hand(warehouse=world.warehouse, sku="NO-SUCH-SKU", as_of=datetime.now(UTC))
    with pytest.raises(UnknownItem, match="NO-SUCH-BIN"):
        direct.on_hand(
            warehouse=world.warehouse,
            sku=world.stocked_sku(1),
            location="NO-SUCH-BIN",
            as_of=datetime.now(UTC),
        )


def test_an_order_that_would_change_other_rows_than_planned_fails_whole_in_its_one_statement(
    world, one_connection, admin_db
):
    """The allocating statement is its own transaction: when it changes fewer balance rows
    than it planned (here a trigger silently skips one row's UPDATE), it must fail itself
    before it commits, or the other line's deduction would stay applied alone."""
    kept, skipped = world.stocked_sku(5), world.stocked_sku(5)
    direct = stock.DirectStock(one_connection)
    lines = [(kept, 2), (skipped, 2)]
    direct.deduct_order(warehouse=world.warehouse, lines=lines)  # ids cached: one statement
    before = ledger_counts(world.db)
    trigger = f"skip_{skipped.lower().replace('-', '_')}"
    with admin_db.session() as s:  # no cangflow role may create a trigger
        sku_id = s.execute(text("SELECT id FROM sku WHERE code = :c"), {"c": skipped}).scalar_one()
        s.execute(
            text(f"""
            CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RETURN NULL; END $$;
            CREATE TRIGGER {trigger} BEFORE UPDATE ON stock_balance FOR EACH ROW
            WHEN (OLD.sku_id = {int(sku_id)})
            EXECUTE FUNCTION {trigger}();
            """)
        )
    try:
        with pytest.raises(
            RuntimeError, match="deduct_order: planned 2 balance rows but changed 1"
        ):
            direct.deduct_order(warehouse=world.warehouse, lines=lines)
    finally:
        with admin_db.session() as s:
            s.execute(text(f"DROP TRIGGER {trigger} ON stock_balance; DROP FUNCTION {trigger}()"))
    assert ledger_counts(world.db) == before
    assert [world.on_hand(kept), world.on_hand(skipped)] == [3, 3]
    assert violations(world.db) == []
