"""One autocommit statement sent through libpq itself (psycopg's `PGconn`): every call of the
direct stock path that is a whole transaction in one statement (a take, an order, a combined
deduction, an as-of read, the id lookup before an order).

Why: psycopg's cursor (query conversion, a Transformer dumping each parameter and loading each
value, its prepared-statement bookkeeping) cost about 45 us of CPU on this machine for a
statement the server runs in 80 us; PQsendQueryPrepared underneath costs a few. On 2 cores
shared by the clients and the server, that client CPU is throughput lost.

What it does instead: the statement is prepared once per connection under a name of its own
(`cangflow_<n>`, never psycopg's `_pg3_*`), and its result columns are checked then: each must
be of a type `_rows` reads (bool, ints, text, json, numeric, date, timestamptz), because an
autocommit statement has committed before its rows are read. Parameters go as text (the
statements cast every parameter, so the server knows each type); values come back as psycopg
reads them (numeric as Decimal). The statement is waited for through psycopg's own wait, so an
interrupt (Ctrl-C, a task timeout) cancels it on the server as psycopg's cursor does.

Only on a connection in autocommit with no transaction open, in UTF-8: psycopg deallocates every
prepared statement of a connection (ours with its own) after a ROLLBACK, a DROP, ALTER or
DISCARD it sends, and a statement found missing is then prepared again and run again, which is
only safe when the failed attempt was a transaction of its own that changed nothing. In a
transaction the caller uses psycopg's cursor (`raw_sql`).
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg import generators, pq

# psycopg's placeholders, and its escape of a literal percent sign.
_PLACEHOLDER = re.compile(r"%(?:\((\w+)\)s|%)")
# SQLSTATE 26000: the prepared statement this connection had is gone (psycopg's DEALLOCATE ALL).
_MISSING = "26000"
_ALREADY_PREPARED = "42P05"
# `usable` admits UTF8 connections only.
_ENCODING = "utf-8"


def _text(value: Any) -> str | None:
    """A parameter in PostgreSQL's text input format."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: a bool is an int
        return "t" if value else "f"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("a timestamp parameter must be timezone-aware")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "{" + ",".join(_array_element(element) for element in value) + "}"
    raise TypeError(f"no text form for a parameter of type {type(value).__name__}")


def _array_element(value: Any) -> str:
    """An element of a one-dimensional array literal: NULL, an int's digits, or anything else
    quoted with \\ and \" escaped."""
    # The common elements first (an order's ids and quantities): digits need no quotes.
    if value is None:
        return "NULL"
    if type(value) is int:
        return str(value)
    if isinstance(value, list | tuple):
        raise TypeError("only one-dimensional arrays are sent")
    text = _text(value)
    if text is None:
        return "NULL"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unchanged(text: str) -> str:
    return text


# Column type OID -> how its text form is read (DateStyle ISO and time zone UTC are set on
# every connection of the engine: `warehouse.db.engine`).
_DECODERS: dict[int, Callable[[str], Any]] = {
    16: lambda text: text == "t",  # bool
    20: int,  # int8
    21: int,  # int2
    23: int,  # int4
    25: _unchanged,  # text
    1043: _unchanged,  # varchar
    114: json.loads,  # json
    3802: json.loads,  # jsonb
    1700: Decimal,  # numeric (a sum of bigints), read as psycopg reads it
    1082: date.fromisoformat,  # date
    1184: datetime.fromisoformat,  # timestamptz
}


class _Statement:
    """A rendered statement (psycopg's %(name)s placeholders) numbered for libpq."""

    def __init__(self, number: int, rendered: str):
        names: list[str] = []

        def number_of(found: re.Match) -> str:
            if found.group(1) is None:
                return "%"
            if found.group(1) not in names:
                names.append(found.group(1))
            return f"${names.index(found.group(1)) + 1}"

        self.name = f"cangflow_{number}".encode()
        self.sql = _PLACEHOLDER.sub(number_of, rendered).encode()
        self.names = tuple(names)

    def values(self, params: Mapping[str, Any]) -> list[bytes | None]:
        texts = [_text(params[name]) for name in self.names]
        return [None if text is None else text.encode(_ENCODING) for text in texts]


_statements: dict[str, _Statement] = {}
_statements_lock = threading.Lock()
# The statement names prepared on each connection, as far as this module knows.
_prepared: weakref.WeakKeyDictionary[psycopg.Connection, set[bytes]] = weakref.WeakKeyDictionary()


def _statement(rendered: str) -> _Statement:
    found = _statements.get(rendered)
    if found is None:
        with _statements_lock:
            found = _statements.setdefault(rendered, _Statement(len(_statements), rendered))
    return found


def usable(connection: psycopg.Connection) -> bool:
    """Whether `fetch` may run on `connection`: autocommit, no transaction open, and text that is
    UTF-8 both ways (psycopg's cursor handles a SQL_ASCII database's bytes; this module does not)."""
    pgconn = connection.pgconn
    return (
        connection.autocommit
        and pgconn.transaction_status == pq.TransactionStatus.IDLE
        and pgconn.parameter_status(b"client_encoding") == b"UTF8"
    )


def fetch(connection: psycopg.Connection, rendered: str, params: Mapping[str, Any]) -> list[tuple]:
    """The rows of `rendered` run as one autocommit statement on `connection` (see `usable`).
    Errors are psycopg's, as its cursor raises them; a value that cannot be read is a DataError."""
    statement = _statement(rendered)
    values = statement.values(params)
    pgconn = connection.pgconn
    names = _prepared.get(connection)
    if names is None:
        with _statements_lock:
            names = _prepared.setdefault(connection, set())
    with connection.lock:
        for attempt in (1, 2):
            if statement.name not in names:
                _prepare(connection, statement)
                names.add(statement.name)
            # None is a NULL to libpq (psycopg sends its NULLs so), though PGconn's stub omits it.
            pgconn.send_query_prepared(statement.name, cast(Any, values))
            result = _result(connection)
            if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                return _rows(result)
            error = _error(pgconn, result)
            if error.sqlstate == _MISSING and attempt == 1:
                names.discard(statement.name)  # deallocated under us: prepare it again, once
                continue
            raise error
    raise AssertionError("unreachable")


def _result(connection: psycopg.Connection) -> pq.abc.PGresult:
    """The statement's result, waited for as psycopg's cursor waits: an interrupt (Ctrl-C, a
    task timeout) cancels the statement on the server instead of waiting for it to finish."""
    results = connection.wait(generators.execute(connection.pgconn))
    return results[0]


def _prepare(connection: psycopg.Connection, statement: _Statement) -> None:
    """Prepare `statement` and check, before it ever runs, that every column it returns is of a
    type `_rows` reads: an autocommit statement has committed by the time its rows are read."""
    pgconn = connection.pgconn
    pgconn.send_prepare(statement.name, statement.sql)
    prepared = _result(connection)
    if prepared.status != pq.ExecStatus.COMMAND_OK:
        error = _error(pgconn, prepared)
        # Prepared already: an interrupt landed after the server prepared it, before it was noted.
        if error.sqlstate != _ALREADY_PREPARED:
            raise error
    pgconn.send_describe_prepared(statement.name)
    described = _result(connection)
    if described.status != pq.ExecStatus.COMMAND_OK:
        raise _error(pgconn, described)
    for column in range(described.nfields):
        if described.ftype(column) not in _DECODERS:
            name = (described.fname(column) or b"?").decode()
            raise psycopg.NotSupportedError(
                f"column {column} ({name}) has type oid {described.ftype(column)}, which "
                "`warehouse.db.prepared` does not read"
            )


def _error(pgconn: pq.abc.PGconn, result: pq.abc.PGresult) -> psycopg.Error:
    """The exception psycopg's cursor raises for `result`: the server's error by its SQLSTATE,
    or, with none (the connection was lost), an OperationalError."""
    if not result.error_field(pq.DiagnosticField.SQLSTATE) and pgconn.status == pq.ConnStatus.BAD:
        return psycopg.OperationalError(result.get_error_message(_ENCODING))
    return pg_errors.error_from_result(result, encoding=_ENCODING)


def _rows(result: pq.abc.PGresult) -> list[tuple]:
    decoders = [_DECODERS[result.ftype(column)] for column in range(result.nfields)]
    rows = []
    for row in range(result.ntuples):
        values = []
        for column, decoder in enumerate(decoders):
            raw = result.get_value(row, column)
            try:
                values.append(None if raw is None else decoder(raw.decode(_ENCODING)))
            except ValueError as error:  # 'infinity', a BC date: what Python's types cannot hold
                raise psycopg.DataError(
                    f"column {column} ({(result.fname(column) or b'?').decode()}): {error}"
                ) from None
        rows.append(tuple(values))
    return rows
