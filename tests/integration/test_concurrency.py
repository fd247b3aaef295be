"""Races on hot rows: 16 workers, each with its own connection, demand above supply.

Every test checks the books afterwards: nothing negative, nothing lost
(sold == initial - final), ledger == balance, keys applied once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import psycopg
import pytest

import warehouse
from tests.integration.helpers import TAKE_PATHS, violations
from warehouse import stock
from warehouse.errors import ConcurrentConflict, InsufficientStock

pytestmark = pytest.mark.integration

WORKERS = 16


@pytest.fixture
def pool(database_url):
    """A Database whose pool gives every worker its own connection."""
    database = warehouse.connect(database_url, pool_size=WORKERS)
    yield database
    database.dispose()


def own_transaction(path: str, db):
    """`take(operation, **arguments)` as its own transaction on `path`."""
    direct = stock.DirectStock(db)

    def take(operation: str, **arguments):
        if path == "direct":
            return getattr(direct, operation)(**arguments)
        with db.session() as s:
            return getattr(stock, operation)(s, **arguments)

    return take


def run_workers(work, workers: int = WORKERS) -> list:
    start = threading.Barrier(workers)

    def worker(number: int):
        start.wait()
        return work(number)

    with ThreadPoolExecutor(workers) as executor:
        return list(executor.map(worker, range(workers)))


@pytest.mark.parametrize("path", TAKE_PATHS)
def test_deduct_never_goes_negative_or_loses_updates_under_16_workers(world, pool, path):
    take = own_transaction(path, pool)
    initial = 100
    hot = [world.stocked_sku(initial // 2, location=world.locations[i % 2]) for i in range(10)]
    for i, sku in enumerate(hot):  # each hot SKU sits in two bins
        world.receive(sku, initial // 2, location=world.locations[(i + 1) % 2])
    per_worker = 60  # 16 x 60 x 2 units on average = 1,920 asked of 1,000

    def work(number: int):
        rng = random.Random(number)
        sold: Counter = Counter()
        replays = refused = 0
        done_keys: list[tuple[str, str, int]] = []
        for i in range(per_worker):
            if done_keys and i % 6 == 0:  # a client retrying a request that already applied
                key, sku, qty = rng.choice(done_keys)
                assert take("deduct", warehouse=world.warehouse, sku=sku, qty=qty, key=key).replayed
                replays += 1
                continue
            sku, qty, key = rng.choice(hot), rng.randint(1, 3), f"{world.warehouse}-w{number}-{i}"
            try:
                change = take("deduct", warehouse=world.warehouse, sku=sku, qty=qty, key=key)
                assert -change.on_hand_change == qty
                sold[sku] += qty
                done_keys.append((key, sku, qty))
            except InsufficientStock:
                refused += 1
        return sold, replays, refused

    results = run_workers(work)
    sold = sum((r[0] for r in results), Counter())
    assert sum(r[1] for r in results) > 0, "the test must replay keys"
    assert sum(r[2] for r in results) > 0, "demand must exceed supply"
    for sku in hot:
        final = world.on_hand(sku)
        assert final >= 0
        assert initial - final == sold[sku], (
            f"{sku}: lost update (sold {sold[sku]}, stock fell {initial - final})"
        )
    assert sum(sold.values()) > 900  # nearly everything sold: refusals came from real shortage
    assert violations(world.db) == []


@pytest.mark.parametrize("path", TAKE_PATHS)
def test_deduct_order_never_deadlocks_or_oversells_under_16_workers(world, pool, path):
    take = own_transaction(path, pool)
    initial = 60
    hot = [world.stocked_sku(initial, location=world.locations[i % 3]) for i in range(10)]
    per_worker = 25

    def work(number: int):
        rng = random.Random(1000 + number)
        sold: Counter = Counter()
        refused = 0
        for i in range(per_worker):
            # Lines in random order: the statement must still lock rows in key order.
            lines = [(sku, rng.randint(1, 3)) for sku in rng.sample(hot, rng.randint(2, 5))]
            try:
                take(  # no retry wrapper: a deadlock would fail the test
                    "deduct_order",
                    warehouse=world.warehouse,
                    lines=lines,
                    key=f"{world.warehouse}-o{number}-{i}",
                )
                for sku, qty in lines:
                    sold[sku] += qty
            except InsufficientStock:
                refused += 1
        return sold, refused

    results = run_workers(work)
    sold = sum((r[0] for r in results), Counter())
    assert sum(r[1] for r in results) > 0, "demand must exceed supply"
    for sku in hot:
        final = world.on_hand(sku)
        assert final >= 0 and initial - final == sold[sku]
    assert violations(world.db) == []


@pytest.mark.parametrize("paths", [("session",), ("direct",), TAKE_PATHS], ids="+".join)
def test_sixteen_concurrent_repeats_of_one_key_apply_exactly_once(world, pool, paths):
    """On one path, or with half the repeats on each (a Session-path claim and a direct
    statement can deadlock on the key and the row: the loser is retried, as callers do)."""
    sku = world.stocked_sku(100)
    key = "same-request-" + sku
    takes = [own_transaction(path, pool) for path in paths]

    def work(number: int):
        take = takes[number % len(takes)]
        for attempt in range(5):
            try:
                return take("deduct", warehouse=world.warehouse, sku=sku, qty=7, key=key)
            except ConcurrentConflict:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    changes = run_workers(work)
    assert sum(not change.replayed for change in changes) == 1
    assert len({change.operation_id for change in changes}) == 1
    assert world.on_hand(sku) == 93
    assert violations(world.db) == []


def test_opposite_transfers_between_two_bins_do_not_deadlock(world, pool):
    sku = world.stocked_sku(500, location=world.locations[0])
    world.receive(sku, 500, location=world.locations[1])
    a, b = world.locations[0], world.locations[1]

    def work(number: int):
        source, target = (a, b) if number % 2 else (b, a)
        for _ in range(15):
            with pool.session() as s:  # no retry: a deadlock raises and fails the test
                stock.transfer(
                    s,
                    warehouse=world.warehouse,
                    sku=sku,
                    qty=1,
                    location=source,
                    to_location=target,
                )

    run_workers(work)
    assert world.on_hand(sku) == 1000
    assert violations(world.db) == []


def test_negative_control_naive_read_modify_write_loses_updates(admin_dsn):
    """The same load through a naive read-then-write at READ COMMITTED loses updates, which
    shows the tests above would catch a version of `deduct` written that way."""
    table = f"naive_balance_{random.randrange(10**9)}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, on_hand bigint NOT NULL)")
        admin.execute(f"INSERT INTO {table} VALUES (1, 1000)")
    try:

        def work(_number: int) -> int:
            sold = 0
            with psycopg.connect(admin_dsn) as connection:
                for _ in range(20):
                    with connection.transaction():
                        (on_hand,) = connection.execute(
                            f"SELECT on_hand FROM {table} WHERE id = 1"
                        ).fetchone()
                        if on_hand >= 1:
                            time.sleep(
                                0.001
                            )  # the moment between read and write that real load has
                            connection.execute(
                                f"UPDATE {table} SET on_hand = %s WHERE id = 1", (on_hand - 1,)
                            )
                            sold += 1
            return sold

        sold = sum(run_workers(work))
        with psycopg.connect(admin_dsn) as connection:
            (final,) = connection.execute(f"SELECT on_hand FROM {table} WHERE id = 1").fetchone()
        assert sold == WORKERS * 20
        assert 1000 - final < sold, "the naive version should have lost updates"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP TABLE {table}")


def test_retry_wrapper_reruns_a_transaction_that_lost_a_deadlock(world, pool, recorded_metrics):
    """Two transactions locking two rows in opposite order: PostgreSQL kills one with a
    deadlock, `retry.in_transaction` runs it again, and both end up applied."""
    from warehouse.db import retry

    first = world.stocked_sku(10)
    second = world.stocked_sku(10)
    gate = threading.Barrier(2)

    def work(number: int):
        order = [first, second] if number == 0 else [second, first]
        attempts = []

        def transaction(s):
            attempts.append(1)
            stock.deduct(s, warehouse=world.warehouse, sku=order[0], qty=1)
            if len(attempts) == 1:
                gate.wait()
                time.sleep(0.2)
            stock.deduct(s, warehouse=world.warehouse, sku=order[1], qty=1)

        retry.in_transaction(pool, transaction, label="deduct")
        return len(attempts)

    attempts = run_workers(work, workers=2)
    assert sorted(attempts) == [1, 2]
    assert recorded_metrics.value("cangflow_deductions_retried_total", operation="deduct") == 1
    assert world.on_hand(first) == 8 and world.on_hand(second) == 8


def test_a_deadlock_without_the_retry_wrapper_surfaces_as_the_one_retryable_error(world, pool):
    first = world.stocked_sku(10)
    second = world.stocked_sku(10)
    gate = threading.Barrier(2)

    def work(number: int):
        order = [first, second] if number == 0 else [second, first]
        try:
            with pool.session() as s:
                stock.deduct(s, warehouse=world.warehouse, sku=order[0], qty=1)
                gate.wait()
                time.sleep(0.2)
                stock.deduct(s, warehouse=world.warehouse, sku=order[1], qty=1)
            return "applied"
        except ConcurrentConflict as error:
            assert error.retryable and "nothing was applied" in str(error)
            return error.sqlstate

    assert sorted(run_workers(work, workers=2)) == ["40P01", "applied"]


def test_a_pick_whose_fefo_row_is_emptied_meanwhile_takes_the_next_row(world, pool):
    """The one-row guarded update plans on its snapshot: row EARLY covers the pick. A concurrent
    transaction empties EARLY and commits while the pick waits on its lock; the guard then
    refuses, nothing is written, and the locking statement serves the pick from row LATE."""
    sku = world.add_sku(lots={"EARLY": date(2027, 1, 1), "LATE": date(2027, 6, 1)})
    world.receive(sku, 5, location=world.locations[0], lot="EARLY")
    world.receive(sku, 5, location=world.locations[1], lot="LATE")
    holding = threading.Event()

    def work(number: int):
        if number == 0:
            with pool.session() as s:
                stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=5, lot="EARLY")
                holding.set()
                time.sleep(0.5)  # the other pick plans on EARLY and waits for this commit
            return None
        holding.wait()
        with pool.session() as s:
            return stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=2)

    _, change = run_workers(work, workers=2)
    assert [(line.lot, line.qty) for line in change.lines] == [("LATE", -2)]
    assert world.on_hand(sku, lot="EARLY") == 0 and world.on_hand(sku, lot="LATE") == 3
    assert violations(world.db) == []
