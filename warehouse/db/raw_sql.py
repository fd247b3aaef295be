"""One statement run through the driver itself, not SQLAlchemy: on the hot paths (stock
statements, as-of reads) SQLAlchemy's per-execute bookkeeping cost as much CPU as the statement.
Inside a transaction (a session's connection) it goes through psycopg's cursor; on a connection
in autocommit (the direct path's) through libpq (`warehouse.db.prepared`). Either way callers
see SQLAlchemy's exceptions wrapping psycopg's (IntegrityError, OperationalError with
.orig.sqlstate, ...), and slow statements are counted like any other."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from warehouse.db import prepared, slow_queries
from warehouse.settings import get_settings


def driver(session: Session) -> psycopg.Connection:
    """The psycopg connection under `session`'s transaction (COPY, prepared statements, quoting):
    the one way code reaches the driver, so what it relies on is written down once."""
    return driver_of(session.connection())


def driver_of(connection: Connection) -> psycopg.Connection:
    """The psycopg connection under a SQLAlchemy Connection."""
    raw = connection.connection.dbapi_connection
    assert isinstance(raw, psycopg.Connection), (
        f"cangflow runs on psycopg 3, not {type(raw).__name__}"
    )
    return raw


def fetchone(session: Session, rendered: str, params: dict[str, Any]) -> tuple | None:
    """The first row of `rendered` (psycopg %(name)s placeholders), prepared on the server."""
    return fetchone_on(driver(session), rendered, params)


def fetchone_on(
    connection: psycopg.Connection, rendered: str, params: dict[str, Any]
) -> tuple | None:
    """`fetchone` on a psycopg connection held outside any Session (the direct stock path:
    `Database.direct_connection`)."""
    rows = _run(connection, rendered, params, all_rows=False)
    return rows[0] if rows else None


def fetchall_on(
    connection: psycopg.Connection, rendered: str, params: dict[str, Any]
) -> list[tuple]:
    """Every row of `rendered` on a psycopg connection, prepared on the server."""
    return _run(connection, rendered, params, all_rows=True)


def _run(
    connection: psycopg.Connection, rendered: str, params: dict[str, Any], *, all_rows: bool
) -> list[tuple]:
    started = time.perf_counter()
    try:
        if prepared.usable(connection):  # a statement that is its own transaction: libpq directly
            rows = prepared.fetch(connection, rendered, params)
        else:
            rows = _in_transaction(connection, rendered, params, all_rows=all_rows)
    except psycopg.Error as error:
        raise DBAPIError.instance(rendered, params, error, psycopg.Error) from error
    slow_queries.observe(rendered, time.perf_counter() - started, get_settings().slow_query_s)
    return rows if all_rows else rows[:1]


def _in_transaction(
    connection: psycopg.Connection, rendered: str, params: dict[str, Any], *, all_rows: bool
) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(rendered, params, prepare=True)
        if all_rows:
            return cursor.fetchall()
        row = cursor.fetchone()
        return [] if row is None else [row]
