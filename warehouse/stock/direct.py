"""The direct stock path: a take (deduct, deduct_order, reserve, release) that is its caller's
whole transaction, in one round trip; and the as-of read (`on_hand(as_of=)`) as one autocommit
statement.

`stock.deduct(session, ...)` runs in the caller's transaction: BEGIN, the key's claim, the
statement and COMMIT are round trips of their own, and the ORM Session costs Python time around
them. That is right for a caller composing several operations in one transaction. A caller with
nothing else to do in the transaction (a picking terminal, an order API) calls
`DirectStock(db).deduct(...)` instead: the same statement (statements.py), prepared on the
server and sent as one autocommit statement on a connection of the Database's pool, claiming
the idempotency key itself. Nothing else runs around it.

What one statement cannot decide alone goes to the Session path, in a transaction of its own,
so each rule stays written once:
- a code names nothing: the Session path names it (UnknownItem);
- the request's key is held already (an earlier request with it, or a concurrent one that
  committed first): the Session path replays the first result or raises IdempotencyConflict.
  A refusal under a key goes there too: the statement claims its key only when it applies, so
  only the Session path (which claims first) can tell a repeat of an applied request from a
  new one that stock no longer covers;
- a deadlock with a Session-path request that claimed the same key before this statement
  wanted it (the statement rolled back whole; the Session path then waits for that request).

The allocating statement (an order of several lines, or a line FEFO spreads over rows) runs
directly too, as one autocommit statement: one round trip when the Database's id cache holds
every id it needs, else two (the ids it lacks are looked up first and cached: they are
committed master data, never deleted). Only a code that names nothing goes to the Session path,
which names it. The statement checks its own row count (it fails when it changed other rows
than it planned), so nothing needs a transaction around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime

import psycopg
from sqlalchemy.exc import DBAPIError

from warehouse.db.engine import Database
from warehouse.db.retry import conflicts_are_retryable
from warehouse.errors import WarehouseError
from warehouse.metrics import sinks as metrics
from warehouse.snapshots.read import on_hand_as_of_on
from warehouse.stock import execute, idempotency, queries, resolve, taking, validation
from warehouse.stock.result import StockChange
from warehouse.stock.statements import DIRECT_SINGLE_ROW_TAKE_STATEMENTS, DIRECT_TAKE_STATEMENTS
from warehouse.stock.taking import OrderLine, Take

# The statement's own claim of its key failed: an earlier request holds it.
UNIQUE_VIOLATION = "23505"
KEY_CONSTRAINT = "idempotency_key_pkey"
DEADLOCK = "40P01"


class _HandOver(Exception):
    """The direct statement could not decide: the Session path does (`reason`, for the metric)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DirectStock:
    """Takes that are their caller's whole transaction, on `db`'s pool. Thread-safe: each call
    borrows a connection for itself."""

    def __init__(self, db: Database):
        self.db = db

    @conflicts_are_retryable
    def deduct(
        self,
        *,
        warehouse: str,
        sku: str,
        qty: int,
        location: str | None = None,
        lot: str | None = None,
        key: str | None = None,
        occurred_at: datetime | None = None,
        reference: str | None = None,
    ) -> StockChange:
        """`stock.deduct`, committed on return."""
        return taking.deduct_with(
            self.take,
            warehouse=warehouse,
            sku=sku,
            qty=qty,
            location=location,
            lot=lot,
            key=key,
            occurred_at=occurred_at,
            reference=reference,
        )

    @conflicts_are_retryable
    def deduct_order(
        self,
        *,
        warehouse: str,
        lines: Iterable[OrderLine | Mapping | tuple],
        key: str | None = None,
        occurred_at: datetime | None = None,
        reference: str | None = None,
    ) -> StockChange:
        """`stock.deduct_order`, committed on return."""
        return taking.deduct_order_with(
            self.take,
            warehouse=warehouse,
            lines=lines,
            key=key,
            occurred_at=occurred_at,
            reference=reference,
        )

    @conflicts_are_retryable
    def reserve(
        self,
        *,
        warehouse: str,
        sku: str,
        qty: int,
        location: str | None = None,
        lot: str | None = None,
        key: str | None = None,
        occurred_at: datetime | None = None,
        reference: str | None = None,
    ) -> StockChange:
        """`stock.reserve`, committed on return."""
        return taking.one_line_with(
            self.take,
            "reserve",
            warehouse=warehouse,
            sku=sku,
            qty=qty,
            location=location,
            lot=lot,
            key=key,
            occurred_at=occurred_at,
            reference=reference,
        )

    @conflicts_are_retryable
    def release(
        self,
        *,
        warehouse: str,
        sku: str,
        qty: int,
        location: str | None = None,
        lot: str | None = None,
        key: str | None = None,
        occurred_at: datetime | None = None,
        reference: str | None = None,
    ) -> StockChange:
        """`stock.release`, committed on return."""
        return taking.one_line_with(
            self.take,
            "release",
            warehouse=warehouse,
            sku=sku,
            qty=qty,
            location=location,
            lot=lot,
            key=key,
            occurred_at=occurred_at,
            reference=reference,
        )

    def on_hand(
        self,
        *,
        warehouse: str,
        sku: str,
        as_of: datetime,
        location: str | None = None,
        lot: str | None = None,
    ) -> int:
        """`stock.on_hand(as_of=)` in autocommit: one statement, a consistent read of its own
        (snapshots more than a month behind, or none before the day, take a second statement,
        whose answer alone is returned). A code that names nothing goes to the Session path,
        which says which."""
        codes = queries.as_of_codes(warehouse, sku, location, lot)
        moment = validation.business_time(as_of, field="as_of", change=False)
        with self.db.direct_connection() as connection:
            value = on_hand_as_of_on(connection, **codes, as_of=moment)
        if value is not None:
            return value
        with self.db.session() as session:
            return queries.on_hand(
                session, warehouse=warehouse, sku=sku, location=location, lot=lot, as_of=as_of
            )

    def take(self, planned: Take) -> StockChange:
        """Run a planned take: directly, else (handed over) on the Session path."""
        try:
            change = self._direct(planned)
        except _HandOver as handover:
            metrics.current().direct_handed_over(planned.request.operation, handover.reason)
            with self.db.session() as session:  # its commit tells the stock hooks itself
                return taking.take(session, planned)
        self.db.stock_committed(change.touched())
        return change

    def _direct(self, planned: Take) -> StockChange:
        """The committed change; `_HandOver` when the Session path must decide. A refusal raises."""
        request = planned.request
        digest = (
            idempotency.request_hash(request.operation, request.arguments)
            if request.key is not None
            else None
        )
        single = planned.single_row()
        if single is not None:
            statement = DIRECT_SINGLE_ROW_TAKE_STATEMENTS[planned.movement_type]
            with self.db.direct_connection() as connection, _undecided():
                change = execute.declinable(
                    connection, request, statement, {**single, "digest": digest}
                )
            if change is not None:
                return change
        items = list(planned.demand)
        resolved = resolve.cached(self.db.ids, request.warehouse, items)
        statement = DIRECT_TAKE_STATEMENTS[planned.movement_type]
        with self.db.direct_connection() as connection, _undecided():
            if resolved is None:  # one round trip more: the ids it lacks, cached from then on
                resolved = resolve.looked_up(connection, self.db.ids, request.warehouse, items)
                if resolved is None:
                    raise _HandOver("unknown_code")
            # Its own transaction: a refusal writes nothing, and a change of other rows than
            # planned fails the statement itself (`statements._TAIL`).
            outcome = execute.decided(
                connection,
                request,
                statement,
                {**planned.allocating(resolved), "digest": digest},
                resolved,
            )
        if isinstance(outcome, WarehouseError):
            if request.key is not None:  # a repeat of a request that applied is a replay
                raise _HandOver("key")
            raise outcome
        return outcome


@contextmanager
def _undecided() -> Iterator[None]:
    """Turn the statement errors the Session path resolves into `_HandOver`."""
    try:
        yield
    except DBAPIError as error:
        orig = error.orig
        if not isinstance(orig, psycopg.Error):
            raise
        if orig.sqlstate == DEADLOCK:
            raise _HandOver("deadlock") from error
        if orig.sqlstate == UNIQUE_VIOLATION and orig.diag.constraint_name == KEY_CONSTRAINT:
            raise _HandOver("key") from error
        raise
