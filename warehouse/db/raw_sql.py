"""One statement run on a session's own connection, inside its transaction, through psycopg
itself: on the hot paths (stock statements, as-of reads) SQLAlchemy's per-execute bookkeeping
cost as much CPU as the statement. Callers still see SQLAlchemy's exceptions (IntegrityError,
OperationalError with .orig.sqlstate, ...), and slow statements are counted like any other."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from warehouse.db import slow_queries
from warehouse.settings import get_settings


def fetchone(session: Session, rendered: str, params: dict[str, Any]) -> tuple | None:
    """The first row of `rendered` (psycopg %(name)s placeholders), prepared on the server."""
    cursor = session.connection().connection.dbapi_connection.cursor()
    started = time.perf_counter()
    try:
        row = cursor.execute(rendered, params, prepare=True).fetchone()
    except psycopg.Error as error:
        raise DBAPIError.instance(rendered, params, error, psycopg.Error) from error
    finally:
        cursor.close()
    slow_queries.observe(rendered, time.perf_counter() - started, get_settings().slow_query_s)
    return row
