"""Runs one stock statement under an optional idempotency key and turns its answer into a
`StockChange` or a domain error. Nothing here commits: the caller owns the transaction."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.db.engine import touch_stock
from warehouse.errors import HistoryClosed, InsufficientStock, InvalidQuantity, WarehouseError
from warehouse.stock import idempotency, validation
from warehouse.stock.resolve import Resolved, flush_pending
from warehouse.stock.result import MovementLine, StockChange
from warehouse.stock.statements import RENDERED
from warehouse.stock.validation import MAX_BALANCE


@dataclass(frozen=True)
class Request:
    """One operation as the idempotency hash sees it, plus what its statement needs."""

    operation: str
    warehouse: str
    arguments: dict[str, Any]
    key: str | None
    occurred_at: datetime
    reference: str | None = None
    reason: str | None = None


def request(
    operation: str,
    warehouse: str,
    arguments: dict[str, Any],
    *,
    key: str | None,
    occurred_at: datetime | None,
    reference: str | None,
    reason: str | None = None,
) -> Request:
    """The one way an operation's Request is made: the key, business time and reference
    validated, and the arguments its idempotency hash covers (the operation's own, plus the
    warehouse, occurred_at and reference as the caller gave them)."""
    return Request(
        operation=operation,
        warehouse=warehouse,
        arguments={
            "warehouse": warehouse,
            **arguments,
            "occurred_at": occurred_at.isoformat() if occurred_at else None,
            "reference": reference,
        },
        key=idempotency.validate_key(key),
        occurred_at=validation.business_time(occurred_at),
        reference=validation.reference(reference),
        reason=reason,
    )


def start(session: Session, request: Request) -> StockChange | None:
    """Begin an operation: the caller's pending ORM changes go first; then, with a key, the
    first result if this request was applied before, else None (go on)."""
    flush_pending(session)
    if request.key is None:
        return None
    first = idempotency.claim(session, request.key, request.operation, request.arguments)
    if first is None:
        return None
    lines = tuple(MovementLine.from_json(item) for item in first.result or [])
    return StockChange(
        request.operation, request.warehouse, first.operation_id, lines, request.key, replayed=True
    )


def _bound(request: Request, params: dict[str, Any]) -> dict[str, Any]:
    return {
        **params,
        "warehouse": request.warehouse,
        "operation": request.operation,
        "key": request.key,
        "occurred_at": request.occurred_at,
        "reference": request.reference,
        "reason": request.reason,
    }


def attempt(
    session: Session, request: Request, statement: str, params: dict[str, Any]
) -> StockChange | None:
    """Run a statement that may decline: the change it applied, or None when it wrote nothing."""
    change = declinable(raw_sql.driver(session), request, statement, params)
    if change is not None:
        touch_stock(session, change.touched())
    return change


def declinable(
    connection: psycopg.Connection, request: Request, statement: str, params: dict[str, Any]
) -> StockChange | None:
    """`attempt` on a psycopg connection: the change, or None when the statement wrote nothing."""
    operation_id, items = _execute(connection, statement, _bound(request, params))
    if items is None:
        return None
    lines = tuple(MovementLine.from_json(item) for item in items)
    return StockChange(request.operation, request.warehouse, operation_id, lines, request.key)


def run(
    session: Session, request: Request, statement: str, params: dict[str, Any], resolved: Resolved
) -> StockChange:
    """Run a statement that applies or refuses; a refusal raises and leaves nothing behind."""
    outcome = decided(raw_sql.driver(session), request, statement, params, resolved)
    if isinstance(outcome, WarehouseError):
        if request.key is not None:
            idempotency.forget(session, request.key)
        raise outcome
    touch_stock(session, outcome.touched())
    return outcome


def decided(
    connection: psycopg.Connection,
    request: Request,
    statement: str,
    params: dict[str, Any],
    resolved: Resolved,
) -> StockChange | WarehouseError:
    """`run` on a psycopg connection: the change, or the refusal (returned, not raised: the
    caller first undoes what its own path wrote, then raises it)."""
    row = _Row(
        *_execute(
            connection,
            statement,
            {**_bound(request, params), "warehouse_id": resolved.warehouse_id},
        )
    )
    if not row.ok:
        return _refusal(request, resolved, row.problems)
    lines = tuple(MovementLine.from_json(item) for item in row.items)
    return StockChange(request.operation, request.warehouse, row.operation_id, lines, request.key)


# The SQLSTATE of `cangflow_refuse_closed_history()` (migration 0002).
HISTORY_CLOSED_SQLSTATE = "CGH01"
# The SQLSTATE of `cangflow_refuse_retired_history()` (migration 0007).
HISTORY_RETIRED_SQLSTATE = "CGH02"
# The same trigger, for a month without a partition older than a closed month (migration 0010).
HISTORY_BEFORE_CLOSED_SQLSTATE = "CGH03"

# Raised by the statement itself when it changed other balance rows than it planned (migration 0016).
STATEMENT_FAILED_SQLSTATE = "CGS01"

_Row = namedtuple("_Row", "ok operation_id items problems planned_rows moved_rows failed")


def _execute(connection: psycopg.Connection, statement: str, bound: dict[str, Any]) -> tuple:
    """Run a stock statement (pre-rendered for psycopg) on a session's or the direct path's
    connection."""
    try:
        row = raw_sql.fetchone_on(connection, RENDERED[statement], bound)
    except DBAPIError as error:
        orig = error.orig
        if not isinstance(orig, psycopg.Error):  # `raw_sql.fetchone_on` wraps psycopg's errors only
            raise
        if orig.sqlstate == HISTORY_CLOSED_SQLSTATE:
            # Raised by the row trigger on a closed month's ledger partition.
            raise HistoryClosed(orig.diag.message_detail or "that month") from error
        if orig.sqlstate == HISTORY_BEFORE_CLOSED_SQLSTATE:
            # Raised by the default partition for a month (with no partition) older than a closed one.
            raise HistoryClosed(
                orig.diag.message_detail or "that month",
                closed_after=orig.diag.message_hint or "?",
            ) from error
        if orig.sqlstate == STATEMENT_FAILED_SQLSTATE:
            raise RuntimeError(orig.diag.message_primary) from error
        if orig.sqlstate == HISTORY_RETIRED_SQLSTATE:
            # Raised by the default partition for a month at or before the newest retired one.
            raise HistoryClosed(
                orig.diag.message_detail or "that month",
                floor=orig.diag.message_hint or "?",
            ) from error
        raise
    # Every stock statement ends in a SELECT over one-row CTEs (`op`, aggregates): one row.
    assert row is not None
    return row


def _refusal(
    request: Request, resolved: Resolved, problems: list[dict[str, Any]]
) -> WarehouseError:
    skus = {ident: code for code, ident in resolved.skus.items()}
    locations = {ident: code for code, ident in resolved.locations.items()}
    lots = {ident: code for (_, code), ident in resolved.lots.items()}
    first = problems[0]
    if first.get("too_much"):
        return InvalidQuantity(
            -int(first["asked"]),
            why=f"bin {locations.get(first['location_id'], '?')!r} would hold "
            f"more than {MAX_BALANCE:,} units of sku {skus.get(first['sku_id'], '?')!r}",
        )
    where = ["reserved stock"] if request.operation == "release" else []
    if first.get("location_id") in locations:
        where.append(f"location {locations[first['location_id']]!r}")
    if first.get("lot_id") in lots:
        where.append(f"lot {lots[first['lot_id']]!r}")
    return InsufficientStock(
        sku=skus.get(first["sku_id"], str(first["sku_id"])),
        asked=int(first["asked"]),
        available=max(int(first["available"]), 0),
        warehouse=request.warehouse,
        where=", ".join(where),
    )
