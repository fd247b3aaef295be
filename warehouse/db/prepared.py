"""One autocommit statement sent through libpq itself (psycopg's `PGconn`): the direct path's
calls that are a whole transaction in one statement (a single-row take, an as-of read).

Why: psycopg's cursor (query conversion, a Transformer dumping each parameter and loading each
value, its prepared-statement bookkeeping, its wait loop) cost about 45 us of CPU on this
machine for a statement the server runs in 80 us; its PQexecPrepared underneath costs a few.
On 2 cores shared by the clients and the server, that client CPU is throughput lost.

What it does instead: the statement is prepared once per connection under a name of its own
(`cangflow_<n>`, never psycopg's `_pg3_*`), parameters go as text (the statements cast every
parameter, so the server knows each type), results come back as text and are read by column
type (the types the stock and as-of statements return; any other fails loudly). The blocking
libpq call releases the GIL.

Only on a connection in autocommit with no transaction open: psycopg answers a ROLLBACK it
sends by deallocating every prepared statement of the connection (ours with its own), and a
statement found missing is then prepared again and run again, which is only safe when the
failed attempt was a transaction of its own that changed nothing. In a transaction the caller
uses psycopg's cursor (`raw_sql`).
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
from psycopg import pq

# psycopg's placeholders, and its escape of a literal percent sign.
_PLACEHOLDER = re.compile(r"%(?:\((\w+)\)s|%)")
# SQLSTATE 26000: the prepared statement this connection had is gone (psycopg's DEALLOCATE ALL).
_MISSING = "26000"


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
    """An element of a one-dimensional array literal: NULL, or quoted with \\ and \" escaped."""
    if isinstance(value, list | tuple):
        raise TypeError("only one-dimensional arrays are sent")
    text = _text(value)
    if text is None:
        return "NULL"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _numeric(text: str) -> int | Decimal:
    return int(text) if text.lstrip("-").isdigit() else Decimal(text)


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
    1700: _numeric,  # numeric (a sum of bigints)
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

    def values(self, params: Mapping[str, Any], encoding: str) -> list[bytes | None]:
        texts = [_text(params[name]) for name in self.names]
        return [None if text is None else text.encode(encoding) for text in texts]


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
    """Whether `fetch` may run on `connection` (autocommit, no transaction open)."""
    return (
        connection.autocommit and connection.pgconn.transaction_status == pq.TransactionStatus.IDLE
    )


def fetch(connection: psycopg.Connection, rendered: str, params: Mapping[str, Any]) -> list[tuple]:
    """The rows of `rendered` run as one autocommit statement on `connection` (see `usable`).
    Errors are psycopg's, as its cursor raises them."""
    statement = _statement(rendered)
    encoding = connection.info.encoding
    values = statement.values(params, encoding)
    pgconn = connection.pgconn
    names = _prepared.get(connection)
    if names is None:
        with _statements_lock:
            names = _prepared.setdefault(connection, set())
    for attempt in (1, 2):
        if statement.name not in names:
            _check(pgconn, pgconn.prepare(statement.name, statement.sql), encoding)
            names.add(statement.name)
        # None is a NULL to libpq (psycopg sends its NULLs so), though PGconn's stub omits it.
        result = pgconn.exec_prepared(statement.name, cast(Any, values))
        if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            return _rows(result, encoding)
        error = _error(pgconn, result, encoding)
        if error.sqlstate == _MISSING and attempt == 1:
            names.discard(statement.name)  # deallocated under us: prepare it again, once
            continue
        raise error
    raise AssertionError("unreachable")


def _check(pgconn: pq.abc.PGconn, result: pq.abc.PGresult, encoding: str) -> None:
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise _error(pgconn, result, encoding)


def _error(pgconn: pq.abc.PGconn, result: pq.abc.PGresult, encoding: str) -> psycopg.Error:
    """The exception psycopg's cursor raises for `result`: the server's error by its SQLSTATE,
    or, with none (the connection was lost), an OperationalError."""
    if not result.error_field(pq.DiagnosticField.SQLSTATE) and pgconn.status == pq.ConnStatus.BAD:
        return psycopg.OperationalError(result.get_error_message(encoding))
    return pg_errors.error_from_result(result, encoding=encoding)


def _rows(result: pq.abc.PGresult, encoding: str) -> list[tuple]:
    decoders = []
    for column in range(result.nfields):
        decoder = _DECODERS.get(result.ftype(column))
        if decoder is None:
            raise TypeError(
                f"column {column} ({(result.fname(column) or b'?').decode()}) has type oid "
                f"{result.ftype(column)}, which `warehouse.db.prepared` does not read"
            )
        decoders.append(decoder)
    rows = []
    for row in range(result.ntuples):
        values = []
        for column, decoder in enumerate(decoders):
            raw = result.get_value(row, column)
            values.append(None if raw is None else decoder(raw.decode(encoding)))
        rows.append(tuple(values))
    return rows
