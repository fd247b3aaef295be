"""The direct path's connections (`warehouse.db.direct_lane`): set up as the engine's, reused
in autocommit apart from the Sessions' pool, bounded, and never handed out broken, in a
transaction, past their age, after `dispose()` or across a fork."""

from __future__ import annotations

import os
import threading

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout

import warehouse
from warehouse.db.direct_lane import DirectLane

pytestmark = pytest.mark.integration


def _pid(db) -> int:
    with db.direct_connection() as connection:
        return connection.info.backend_pid


def test_direct_calls_reuse_one_connection_set_up_as_the_engines_and_outside_the_pool(
    one_connection,
):
    with one_connection.direct_connection() as connection:
        first = connection.info.backend_pid
        settings = connection.execute(
            "SELECT current_setting('TimeZone'), current_setting('DateStyle'), "
            "current_setting('plan_cache_mode'), current_user"
        ).fetchone()
        assert connection.autocommit
        # The pool's one connection is free for a Session while the lane's is out.
        assert one_connection.engine.pool.checkedout() == 0
        with one_connection.session() as s:
            assert s.execute(text("SELECT 1")).scalar_one() == 1
    assert settings == ("UTC", "ISO, MDY", "force_generic_plan", one_connection.acting_role())
    assert _pid(one_connection) == first == _pid(one_connection)


def test_a_connection_that_broke_is_dropped_and_the_next_call_gets_a_working_one(
    one_connection, admin_dsn
):
    with pytest.raises(psycopg.OperationalError):
        with one_connection.direct_connection() as connection:
            broken = connection.info.backend_pid
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (broken,))
            connection.execute("SELECT 1")
    assert one_connection._direct_lane.idle() == 0
    assert _pid(one_connection) != broken


def test_a_transaction_left_open_is_rolled_back_and_the_connection_is_back_in_autocommit(
    one_connection, admin_dsn
):
    with one_connection.direct_connection() as connection:
        pid = connection.info.backend_pid
        connection.autocommit = False
        connection.execute("CREATE TEMPORARY TABLE left_open (n int)")
    with one_connection.direct_connection() as connection:
        assert connection.info.backend_pid == pid
        assert connection.autocommit
        assert connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # Rolled back: the table never existed.
        assert connection.execute("SELECT to_regclass('pg_temp.left_open')").fetchone() == (None,)


def test_at_most_limit_are_out_and_a_caller_past_it_waits_then_fails(one_connection):
    lane = DirectLane(one_connection.engine, limit=1, keep=1, recycle=1800, timeout=0.2)
    try:
        with lane.connection():
            with pytest.raises(
                PoolTimeout, match=r"no direct connection free within 0.2 s \(1 in use\)"
            ):
                with lane.connection():
                    pass
            # Another thread waiting gets it as soon as it comes back.
            got = []
            waiter = threading.Thread(target=lambda: got.append(_held_pid(lane)))
            lane.timeout = 5
            waiter.start()
        waiter.join(10)
        assert got and got[0] > 0
    finally:
        lane.close()


def _held_pid(lane: DirectLane) -> int:
    with lane.connection() as connection:
        return connection.info.backend_pid


def test_idle_connections_beyond_keep_are_closed_and_old_ones_replaced(one_connection):
    lane = DirectLane(one_connection.engine, limit=3, keep=1, recycle=1800, timeout=1)
    try:
        with lane.connection() as a, lane.connection() as b, lane.connection() as c:
            held = [a, b, c]
        assert lane.idle() == 1
        assert sorted(conn.closed for conn in held) == [False, True, True]
        [kept] = [conn for conn in held if not conn.closed]
        lane.recycle = 0  # every idle one is now too old: replaced, and closed
        with lane.connection() as fresh:
            assert fresh is not kept and kept.closed
    finally:
        lane.close()


def test_dispose_closes_the_idle_ones_and_those_out_when_they_come_back(database_url):
    db = warehouse.connect(database_url, pool_size=2)
    with db.direct_connection() as out:
        with db.direct_connection() as idle_later:
            pass
        assert db._direct_lane.idle() == 1
        db.dispose()
        assert idle_later.closed and not out.closed
    assert out.closed
    assert db._direct_lane.idle() == 0
    assert _pid(db) > 0  # a lane after dispose makes new connections, as the pool does
    db.dispose()


def test_a_forked_child_makes_its_own_connection_and_leaves_the_parents_working(one_connection):
    parent = _pid(one_connection)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report the backend its own call used, then leave at once
        try:
            os.write(write, str(_pid(one_connection)).encode())
        finally:
            os._exit(0)
    os.close(write)
    reported = int(os.read(read, 32) or b"0")
    os.close(read)
    os.waitpid(child, 0)
    assert reported not in (0, parent)
    with one_connection.direct_connection() as connection:  # the parent's, still alive
        assert connection.info.backend_pid == parent
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_more_threads_than_the_limit_share_it_one_connection_each_and_lose_nothing(
    world, database_url, monkeypatch
):
    """12 threads deducting through a lane of at most 4 connections (pool_size 2): each call
    waits its turn, no connection is ever out to two calls at once, and every unit lands."""
    from concurrent.futures import ThreadPoolExecutor

    from warehouse import invariants, stock

    db = warehouse.connect(database_url, pool_size=2)
    try:
        sku = world.stocked_sku(300)
        lane = db._direct_lane
        out: set[int] = set()
        most, shared = [0], []
        guard = threading.Lock()
        take, give_back = lane._take, lane._give_back

        def spied_take():
            held = take()
            with guard:
                if id(held[0]) in out:  # one connection out to two calls at once
                    shared.append(id(held[0]))
                out.add(id(held[0]))
                most[0] = max(most[0], len(out))
            return held

        def spied_give_back(connection, made_at, generation):
            with guard:
                out.discard(id(connection))
            give_back(connection, made_at, generation)

        monkeypatch.setattr(lane, "_take", spied_take)
        monkeypatch.setattr(lane, "_give_back", spied_give_back)
        direct = stock.DirectStock(db)

        def pick(_):
            for _ in range(25):
                direct.deduct(warehouse=world.warehouse, sku=sku, qty=1)

        with ThreadPoolExecutor(12) as executor:
            list(executor.map(pick, range(12)))
        assert shared == []
        assert world.on_hand(sku) == 0
        assert 1 < most[0] <= lane.limit == 4
        with db.session() as s:
            assert invariants.check(s) == []
    finally:
        db.dispose()
