"""Two sessions that interleave at the lock waits that matter: one holds a change uncommitted,
the other's operation waits on its row lock; then the first commits (or rolls back). The waiting
operation must decide on the state it locked: applied on the committed state, or a domain
refusal; never a "planned/changed" mismatch or a constraint violation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from sqlalchemy import text

import warehouse
from tests.integration.helpers import TAKE_PATHS, take_on
from warehouse import stock
from warehouse.errors import InsufficientStock

pytestmark = pytest.mark.integration

WAIT_S = 30


@pytest.fixture
def pool(database_url):
    database = warehouse.connect(database_url, pool_size=4)
    yield database
    database.dispose()


def waiting_on_a_lock(db, before: int) -> bool:
    with db.session() as s:
        return (
            s.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            > before
        )


def lock_waits(db) -> int:
    with db.session() as s:
        return s.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        ).scalar_one()


def interleave(db, holder, waiter, *, commit: bool = True):
    """Run `holder(session)` and keep its transaction open; start `waiter(session)` in its own
    transaction on another thread; once the waiter waits on a lock, commit (or roll back) the
    holder. Returns the waiter's result, or raises its error."""
    before = lock_waits(db)
    with ThreadPoolExecutor(1) as executor:
        future: Future | None = None
        session_cm = db.session()
        session = session_cm.__enter__()
        try:
            holder(session)

            def wait_then_run():
                with db.session() as other:
                    return waiter(other)

            future = executor.submit(wait_then_run)
            deadline = time.monotonic() + WAIT_S
            while not waiting_on_a_lock(db, before):
                assert not future.done(), (
                    f"the waiter did not wait on the holder: {future.result()!r}"
                )
                assert time.monotonic() < deadline, "the waiter never waited on a lock"
                time.sleep(0.02)
        except BaseException:
            session_cm.__exit__(*__import__("sys").exc_info())
            raise
        if commit:
            session_cm.__exit__(None, None, None)
        else:
            session.rollback()
            session_cm.__exit__(None, None, None)
        return future.result(timeout=WAIT_S)


@pytest.mark.parametrize("path", TAKE_PATHS)
def test_a_deduction_waiting_on_a_receipt_applies_on_the_received_stock(world, pool, path):
    take = take_on(path, pool)
    sku = world.stocked_sku(5)
    bin_ = world.locations[0]
    change = interleave(
        pool,
        lambda s: stock.receive(s, warehouse=world.warehouse, sku=sku, qty=10, location=bin_),
        lambda s: take(s, "deduct", warehouse=world.warehouse, sku=sku, qty=8, location=bin_),
    )
    assert not change.replayed and change.lines[0].on_hand == 7
    assert world.on_hand(sku) == 7


@pytest.mark.parametrize("path", TAKE_PATHS)
def test_a_deduction_waiting_on_a_receipt_that_rolls_back_is_refused_truthfully(world, pool, path):
    take = take_on(path, pool)
    sku = world.stocked_sku(5)
    bin_ = world.locations[0]
    with pytest.raises(InsufficientStock, match="asked 8, available 5"):
        interleave(
            pool,
            lambda s: stock.receive(s, warehouse=world.warehouse, sku=sku, qty=10, location=bin_),
            lambda s: take(s, "deduct", warehouse=world.warehouse, sku=sku, qty=8, location=bin_),
            commit=False,
        )
    assert world.on_hand(sku) == 5


@pytest.mark.parametrize("path", TAKE_PATHS)
def test_a_single_row_pick_whose_row_a_receipt_changes_meanwhile_takes_from_the_new_total(
    world, pool, path
):
    """The fast path's guarded UPDATE re-reads the row after the receipt commits (no lost update)."""
    take = take_on(path, pool)
    sku = world.stocked_sku(5)
    change = interleave(
        pool,
        lambda s: stock.receive(
            s, warehouse=world.warehouse, sku=sku, qty=10, location=world.locations[0]
        ),
        lambda s: take(s, "deduct", warehouse=world.warehouse, sku=sku, qty=3),
    )
    assert change.lines[0].on_hand == 12 and world.on_hand(sku) == 12


def test_a_count_waiting_on_a_receipt_sets_the_shelf_count_and_books_the_difference(world, pool):
    sku = world.stocked_sku(5)
    bin_ = world.locations[0]
    change = interleave(
        pool,
        lambda s: stock.receive(s, warehouse=world.warehouse, sku=sku, qty=10, location=bin_),
        lambda s: stock.count(s, warehouse=world.warehouse, location=bin_, sku=sku, qty=9),
    )
    assert [(line.qty, line.on_hand) for line in change.lines] == [(9 - 15, 9)]
    assert world.on_hand(sku) == 9
    assert_books_balance(world)


def test_a_transfer_waiting_on_a_deduction_moves_only_what_is_left(world, pool):
    sku = world.stocked_sku(10)
    source, target = world.locations[:2]
    with pytest.raises(InsufficientStock, match="asked 5, available 4"):
        interleave(
            pool,
            lambda s: stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=6, location=source),
            lambda s: stock.transfer(
                s, warehouse=world.warehouse, sku=sku, qty=5, location=source, to_location=target
            ),
        )
    change = interleave(
        pool,
        lambda s: stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=1, location=source),
        lambda s: stock.transfer(
            s, warehouse=world.warehouse, sku=sku, qty=3, location=source, to_location=target
        ),
    )
    assert {line.location: line.on_hand for line in change.lines} == {source: 0, target: 3}
    assert_books_balance(world)


@pytest.mark.parametrize("path", TAKE_PATHS)
def test_an_order_waiting_on_a_count_allocates_from_the_counted_stock(world, pool, path):
    take = take_on(path, pool)
    first, second = world.stocked_sku(10), world.stocked_sku(10)
    bin_ = world.locations[0]
    with pytest.raises(InsufficientStock, match="asked 5, available 4"):
        interleave(
            pool,
            lambda s: stock.count(
                s, warehouse=world.warehouse, location=bin_, lines=[(first, 4), (second, 10)]
            ),
            lambda s: take(
                s, "deduct_order", warehouse=world.warehouse, lines=[(second, 2), (first, 5)]
            ),
        )
    change = interleave(
        pool,
        lambda s: stock.count(s, warehouse=world.warehouse, location=bin_, lines=[(first, 6)]),
        lambda s: take(
            s, "deduct_order", warehouse=world.warehouse, lines=[(second, 2), (first, 5)]
        ),
    )
    assert {line.sku: line.on_hand for line in change.lines} == {first: 1, second: 8}
    assert_books_balance(world)


@pytest.mark.parametrize("path", TAKE_PATHS)
def test_a_release_waiting_on_a_reservation_releases_from_the_new_reserved(world, pool, path):
    take = take_on(path, pool)
    sku = world.stocked_sku(10)
    bin_ = world.locations[0]
    with pool.session() as s:
        stock.reserve(s, warehouse=world.warehouse, sku=sku, qty=6, location=bin_)
    with pytest.raises(InsufficientStock, match="asked 9, available 8"):
        interleave(
            pool,
            lambda s: stock.reserve(s, warehouse=world.warehouse, sku=sku, qty=2, location=bin_),
            lambda s: take(s, "release", warehouse=world.warehouse, sku=sku, qty=9, location=bin_),
        )
    change = interleave(
        pool,
        lambda s: stock.reserve(s, warehouse=world.warehouse, sku=sku, qty=1, location=bin_),
        lambda s: take(s, "release", warehouse=world.warehouse, sku=sku, qty=7, location=bin_),
    )
    assert (change.lines[0].reserved, world.available(sku)) == (2, 8)
    assert_books_balance(world)


@pytest.mark.parametrize("path", TAKE_PATHS)
def test_an_order_waiting_on_a_release_takes_the_released_stock(world, pool, path):
    """The order's UPDATE must set reserved from the locked row too: left to the snapshot's
    version (6 reserved), the new row 10 - 8 = 2 on hand would fail the reserved <= on_hand CHECK."""
    take = take_on(path, pool)
    sku, other = world.stocked_sku(10), world.stocked_sku(5)
    bin_ = world.locations[0]
    with pool.session() as s:
        stock.reserve(s, warehouse=world.warehouse, sku=sku, qty=6, location=bin_)
    change = interleave(
        pool,
        lambda s: stock.release(s, warehouse=world.warehouse, sku=sku, qty=6, location=bin_),
        lambda s: take(s, "deduct_order", warehouse=world.warehouse, lines=[(sku, 8), (other, 1)]),
    )
    assert {line.sku: (line.on_hand, line.reserved) for line in change.lines} == {
        sku: (2, 0),
        other: (4, 0),
    }
    assert_books_balance(world)


NAIVE = "b.v - p.qty"  # arithmetic on the UPDATE's own row
LOCKED = "p.v - p.qty"  # arithmetic on the row as locked, which the plan carries


@pytest.mark.parametrize("arithmetic", [NAIVE, LOCKED], ids=["naive", "locked"])
def test_control_a_check_fires_on_the_updates_own_stale_row_unless_it_computes_from_the_locked_row(
    admin_dsn, pool, arithmetic
):
    """The statement shape of the locking heads, on a table with a CHECK: 5 in stock, a receipt
    of 10 commits while the statement waits for the row lock, then it takes 8. PostgreSQL forms
    the new row from the statement's snapshot (5 - 8 = -3) and checks constraints before it
    notices the newer version, so the naive shape fails with a CheckViolation although 15 - 8
    is fine; computed from the locked row, the statement writes 7."""
    import psycopg

    table = f"interleave_control_{threading.get_ident()}_{len(arithmetic)}_{arithmetic[0]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL CHECK (v >= 0))")
        admin.execute(f"INSERT INTO {table} VALUES (1, 5)")
    try:
        with psycopg.connect(admin_dsn) as holder, psycopg.connect(admin_dsn) as waiter:
            holder.execute(f"UPDATE {table} SET v = v + 10 WHERE id = 1")
            before = lock_waits(pool)
            with ThreadPoolExecutor(1) as executor:
                taking = executor.submit(
                    lambda: waiter.execute(f"""
                    WITH locked AS MATERIALIZED (SELECT id, v FROM {table} WHERE id = 1 FOR UPDATE),
                    plan AS (SELECT id, v, 8 AS qty FROM locked WHERE v >= 8),
                    changed AS (UPDATE {table} b SET v = {arithmetic} FROM plan p WHERE b.id = p.id RETURNING b.v)
                    SELECT v FROM changed""").fetchone()
                )
                deadline = time.monotonic() + WAIT_S
                while not waiting_on_a_lock(pool, before):
                    assert time.monotonic() < deadline and not taking.done()
                    time.sleep(0.02)
                holder.commit()
                if arithmetic == NAIVE:
                    with pytest.raises(psycopg.errors.CheckViolation, match="-3"):
                        taking.result(timeout=WAIT_S)
                else:
                    assert taking.result(timeout=WAIT_S) == (7,)
            waiter.rollback()
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP TABLE {table}")


def assert_books_balance(world) -> None:
    from tests.integration.helpers import violations

    assert violations(world.db) == []
