"""The data-quality suites run on every URL shape cangflow accepts: a unix socket with no host
(the embedded server's shape), a TCP URL whose password holds URL and template characters, and an
IPv6 host; as SQL on the Database's own engine and on Great Expectations (a suite without
AS_SQL), which is handed connections made like our engine's, never our URL as a string to parse."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.conftest import ADMIN_URL
from tests.services import tcp_forwarder
from warehouse import Database
from warehouse.quality import suites as quality

pytestmark = pytest.mark.integration

HOSTILE_PASSWORD = "p$HOME@x%41:y/${Z}"
SOCKET_DIRECTORY = "/var/run/postgresql"


@pytest.fixture(scope="module")
def database_name(database_url, db) -> str:
    return make_url(database_url).database


@pytest.fixture(scope="module")
def hostile_role(database_name):
    """A role whose password needs every kind of quoting; it may read the balances."""
    role = f"cangflow_q_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(HOSTILE_PASSWORD)
            )
        )
    dsn = make_url(ADMIN_URL).set(database=database_name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Every Database session reads the business zone first (business_calendar).
        conn.execute(
            sql.SQL("GRANT SELECT ON stock_balance, business_calendar TO {}").format(
                sql.Identifier(role)
            )
        )
    yield role
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _passes_the_balance_suite(url: str) -> None:
    import expectations.stock_balance

    database = Database(url)
    try:
        for as_sql in (True, False):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(expectations.stock_balance, "AS_SQL", as_sql)
                result = quality.validate(database, "stock_balance")
            assert result.success and len(result.rows) == 4, (as_sql, str(result))
    finally:
        database.dispose()


def _gx_connection_info(url: str) -> tuple:
    """(user, password, host, port, database) of a connection GX's datasource opens for `url`."""
    database = Database(url)
    try:
        source = quality.datasource(quality.quiet_context(), database)
        raw = source.get_execution_engine().engine.raw_connection()
        try:
            info = raw.dbapi_connection.info
            return info.user, info.password, info.host, info.port, info.dbname
        finally:
            raw.close()
            quality.close_engines(source)
    finally:
        database.dispose()


def test_quality_suite_runs_over_a_unix_socket_url_with_no_host(database_name):
    url = f"postgresql+psycopg://postgres@/{database_name}?host={SOCKET_DIRECTORY}"
    _passes_the_balance_suite(url)
    assert _gx_connection_info(url)[2] == SOCKET_DIRECTORY


def test_pasting_a_socket_url_into_gx_is_what_failed(database_name):
    """The negative control: GX's own Postgres datasource refuses the embedded server's URL."""
    import great_expectations as gx

    url = f"postgresql+psycopg://postgres@/{database_name}?host={SOCKET_DIRECTORY}"
    with pytest.raises(Exception, match="host"):
        gx.get_context(mode="ephemeral").data_sources.add_postgres("pasted", connection_string=url)


def test_quality_suite_runs_with_a_password_holding_dollar_at_percent_and_colon(
    database_name, hostile_role
):
    url = f"postgresql+psycopg://{hostile_role}:{quote(HOSTILE_PASSWORD, safe='')}@127.0.0.1:5432/{database_name}"
    _passes_the_balance_suite(url)
    user, password, host, _port, dbname = _gx_connection_info(url)
    assert (user, password, host, dbname) == (
        hostile_role,
        HOSTILE_PASSWORD,
        "127.0.0.1",
        database_name,
    )


def test_quality_suite_runs_on_an_ipv6_host(database_name):
    with tcp_forwarder("::1", ("127.0.0.1", 5432)) as port:
        url = f"postgresql+psycopg://postgres@[::1]:{port}/{database_name}"
        _passes_the_balance_suite(url)
        _user, _, host, got_port, _ = _gx_connection_info(url)
    assert (host, int(got_port)) == ("::1", port)
