"""`warehouse.db.prepared`: autocommit statements sent through libpq itself. What goes in as
text must arrive as the value it was (quotes, backslashes, braces, NULLs in arrays; zones on
timestamps), what comes back must read as psycopg would have read it (what it cannot read is
refused before the statement runs), an interrupt cancels the statement, and a statement that
psycopg deallocated behind its back (its DEALLOCATE ALL after a ROLLBACK) is prepared again."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import warehouse
from warehouse import stock
from warehouse.db import prepared, raw_sql

pytestmark = pytest.mark.integration

AWKWARD = ['a"b', "c\\d", None, "{x,y}", "NULL", "", "é ü", " spaced "]
ROUND_TRIP = (
    "SELECT CAST(%(texts)s AS text[]) IS NOT DISTINCT FROM CAST(%(texts_again)s AS text[]),"
    " CAST(%(texts)s AS text[]) = ARRAY['a\"b', 'c\\d', NULL, '{x,y}', 'NULL', '', 'é ü', ' spaced '],"
    " array_length(CAST(%(texts)s AS text[]), 1), (CAST(%(texts)s AS text[]))[3] IS NULL,"
    " (CAST(%(texts)s AS text[]))[5] IS NULL,"
    " CAST(%(ids)s AS bigint[]) = ARRAY[1, NULL, -3]::bigint[],"
    " CAST(%(at)s AS timestamptz), CAST(%(ats)s AS timestamptz[]) = ARRAY[CAST(%(at)s AS timestamptz)],"
    " CAST(%(day)s AS date), CAST(%(yes)s AS boolean), CAST(%(big)s AS bigint),"
    " CAST(%(word)s AS text), CAST(%(word)s AS varchar), CAST(%(amount)s AS numeric),"
    " sum(x), to_jsonb(CAST(%(word)s AS text)), CAST(%(missing)s AS text), '100%%'"
    " FROM (VALUES (CAST(1 AS bigint)), (2)) AS v(x)"
)


@pytest.fixture
def autocommit(database_url):
    database = warehouse.connect(database_url, pool_size=1)
    with database.direct_connection() as connection:
        yield connection
    database.dispose()


def test_parameters_and_columns_keep_their_values_through_the_text_forms(autocommit):
    east = timezone(timedelta(hours=9))
    at = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=east)
    [row] = prepared.fetch(
        autocommit,
        ROUND_TRIP,
        {
            "texts": AWKWARD,
            "texts_again": tuple(AWKWARD),
            "ids": [1, None, -3],
            "at": at,
            "ats": [at],
            "day": date(2026, 2, 28),
            "yes": True,
            "big": 2**62,
            "word": "Lager-Ä 'quoted'",
            "amount": Decimal("2.50"),
            "missing": None,
        },
    )
    assert row[:6] == (True, True, len(AWKWARD), True, False, True)
    assert row[6] == at and row[6].utcoffset() == timedelta(0)  # the same instant, read in UTC
    assert row[7:11] == (True, date(2026, 2, 28), True, 2**62)
    assert row[11:13] == ("Lager-Ä 'quoted'", "Lager-Ä 'quoted'")
    assert row[13] == Decimal("2.50") and row[14] == Decimal(3)  # numeric: Decimal, as psycopg
    assert row[15:] == ("Lager-Ä 'quoted'", None, "100%")  # %% is psycopg's escape of %


def test_a_naive_timestamp_or_an_unknown_type_is_refused_before_anything_is_sent(autocommit):
    with pytest.raises(TypeError, match="timezone-aware"):
        prepared.fetch(
            autocommit, "SELECT CAST(%(at)s AS timestamptz)", {"at": datetime(2026, 1, 1)}
        )
    with pytest.raises(TypeError, match="no text form for a parameter of type dict"):
        prepared.fetch(autocommit, "SELECT CAST(%(x)s AS jsonb)", {"x": {"a": 1}})
    assert autocommit.execute("SELECT 1").fetchone() == (1,)  # the connection is still usable


def test_a_column_it_cannot_read_is_refused_before_the_statement_runs(autocommit):
    """An autocommit statement has committed by the time its rows are read: a column of a type
    it does not read must stop it at prepare time, not after its writes."""
    autocommit.execute("CREATE TEMP TABLE written (n int)")
    with pytest.raises(psycopg.NotSupportedError, match=r"column 0 \(stamp\) has type oid 1114"):
        prepared.fetch(
            autocommit,
            "INSERT INTO written VALUES (CAST(%(n)s AS int)) RETURNING CAST(now() AS timestamp) AS stamp",
            {"n": 1},
        )
    assert autocommit.execute("SELECT count(*) FROM written").fetchone() == (0,)
    with pytest.raises(psycopg.DataError, match=r"column 0 \(day\)"):  # Python has no such date
        prepared.fetch(autocommit, "SELECT CAST('infinity' AS date) AS day", {})


def test_an_interrupt_cancels_the_statement_on_the_server(autocommit):
    """Ctrl-C (or a task timeout raised into the thread) while a direct call waits: the
    statement is cancelled, as psycopg's cursor does, not finished and committed first."""
    import _thread
    import threading

    autocommit.execute("CREATE TEMP TABLE slow_writes (n int)")
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            prepared.fetch(
                autocommit,
                "INSERT INTO slow_writes SELECT CAST(%(n)s AS int) FROM pg_sleep(3) RETURNING n",
                {"n": 1},
            )
    finally:
        timer.cancel()
    assert autocommit.execute("SELECT count(*) FROM slow_writes").fetchone() == (0,)


def test_a_statement_deallocated_behind_its_back_is_prepared_again(autocommit):
    statement = "SELECT CAST(%(n)s AS bigint) + 1 AS next"
    assert prepared.fetch(autocommit, statement, {"n": 1}) == [(2,)]
    # What psycopg does after a ROLLBACK of a transaction in which it prepared a statement.
    autocommit.autocommit = False
    for _ in range(3):  # psycopg prepares on a statement's second run (prepare_threshold=2)
        autocommit.execute("SELECT CAST(%s AS bigint)", (1,))
    autocommit.rollback()
    autocommit.autocommit = True
    names = [row[0] for row in autocommit.execute("SELECT name FROM pg_prepared_statements")]
    assert names == [], "psycopg's ROLLBACK left prepared statements: this test shows nothing"
    assert prepared.fetch(autocommit, statement, {"n": 41}) == [(42,)]
    assert prepared.fetch(autocommit, statement, {"n": 1}) == [(2,)]


def test_server_errors_arrive_as_psycopg_raises_them(autocommit):
    with pytest.raises(psycopg.errors.DivisionByZero):
        prepared.fetch(autocommit, "SELECT CAST(%(n)s AS int) / 0", {"n": 1})
    with pytest.raises(DBAPIError) as raised:  # through raw_sql, as the stock code sees it
        raw_sql.fetchone_on(autocommit, "SELECT CAST(%(n)s AS int) / 0", {"n": 1})
    assert isinstance(raised.value.orig, psycopg.errors.DivisionByZero)
    assert prepared.usable(autocommit)  # an autocommit error leaves no transaction behind


def test_in_a_transaction_raw_sql_keeps_to_psycopg(db):
    with db.session() as s:
        connection = raw_sql.driver(s)
        assert not prepared.usable(connection)
        row = raw_sql.fetchone(s, "SELECT CAST(%(day)s AS date)", {"day": date(2026, 1, 2)})
        assert row == (date(2026, 1, 2),)


def test_a_direct_take_after_a_rolled_back_session_on_its_connection_still_applies(
    world, database_url
):
    """The path a service walks: one pooled connection serves a Session whose transaction
    rolls back (psycopg then deallocates every prepared statement), then a direct deduction."""
    database = warehouse.connect(database_url, pool_size=1)
    try:
        sku = world.stocked_sku(10)
        direct = stock.DirectStock(database)
        direct.deduct(warehouse=world.warehouse, sku=sku, qty=1)
        with pytest.raises(RuntimeError), database.session() as s:
            for _ in range(3):
                s.execute(text("SELECT CAST(:n AS bigint)"), {"n": 1})
            raise RuntimeError("the caller gives up: rolled back")
        change = direct.deduct(warehouse=world.warehouse, sku=sku, qty=2)
        assert change.lines[0].on_hand == 7 and world.on_hand(sku) == 7
    finally:
        database.dispose()


def test_a_connection_lost_under_a_direct_take_fails_that_call_and_the_pool_recovers(
    world, database_url, admin_dsn
):
    database = warehouse.connect(database_url, pool_size=1)
    try:
        sku = world.stocked_sku(10)
        direct = stock.DirectStock(database)
        direct.deduct(warehouse=world.warehouse, sku=sku, qty=1)
        with database.direct_connection() as connection:
            pid = connection.info.backend_pid
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(DBAPIError) as raised:
            direct.deduct(warehouse=world.warehouse, sku=sku, qty=1)
        assert isinstance(raised.value.orig, psycopg.OperationalError)
        assert database.engine.pool.checkedout() == 0
        change = direct.deduct(warehouse=world.warehouse, sku=sku, qty=2)  # a new connection
        assert change.lines[0].on_hand == 7 and world.on_hand(sku) == 7
    finally:
        database.dispose()


def test_the_direct_path_takes_this_route_and_sessions_keep_to_psycopg(world, database_url):
    """What the benchmarks' figures rest on: a direct take, order and as-of read run as
    statements prepared by this module (named cangflow_<n>) on the pooled connection."""
    from datetime import UTC, datetime

    database = warehouse.connect(database_url, pool_size=1)
    try:
        sku, other = world.stocked_sku(10), world.stocked_sku(10)
        direct = stock.DirectStock(database)
        direct.deduct(warehouse=world.warehouse, sku=sku, qty=1)
        direct.deduct_order(warehouse=world.warehouse, lines=[(sku, 1), (other, 1)])
        direct.on_hand(warehouse=world.warehouse, sku=sku, as_of=datetime.now(UTC))
        with database.direct_connection() as connection:
            names = connection.execute(
                "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'cangflow\\_%'"
            ).fetchall()
        statements = " ".join(row[0] for row in names)
        assert len(names) >= 4, names  # single-row take, id lookup, order, as-of read
        assert "FOR UPDATE OF b" in statements and "snapshot_day" in statements
    finally:
        database.dispose()
