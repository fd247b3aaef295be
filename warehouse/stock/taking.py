"""Taking stock out of balances: deduct (pick), deduct_order, reserve, release.

Without a location or lot the quantity is allocated FEFO across the warehouse's bins and lots
(earliest expiry, then oldest receipt), all or nothing, in one statement (see statements.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from warehouse.db.retry import conflicts_are_retryable
from warehouse.errors import ConcurrentConflict, InvalidArgument, WarehouseError
from warehouse.metrics import sinks as metrics
from warehouse.stock import execute, validation
from warehouse.stock.resolve import Item, resolve
from warehouse.stock.result import StockChange
from warehouse.stock.statements import SINGLE_ROW_TAKE_STATEMENTS, TAKE_STATEMENTS

MAX_ORDER_LINES = 10_000


@dataclass(frozen=True)
class OrderLine:
    sku: str
    qty: int
    location: str | None = None
    lot: str | None = None


def _take(
    session: Session,
    *,
    movement_type: str,
    operation: str,
    warehouse: str,
    lines: list[OrderLine],
    key: str | None,
    occurred_at: datetime | None,
    reference: str | None,
) -> StockChange:
    warehouse = validation.code(warehouse, field="warehouse")
    request = execute.request(
        operation,
        warehouse,
        {"lines": [[line.sku, line.qty, line.location, line.lot] for line in lines]},
        key=key,
        occurred_at=occurred_at,
        reference=reference,
    )
    replay = execute.start(session, request)
    if replay is not None:
        return replay
    # Identical (sku, location, lot) lines are one demand; the statement allocates per demand.
    demand: dict[Item, int] = {}
    for line in lines:
        item = Item(line.sku, line.location, line.lot)
        demand[item] = demand.get(item, 0) + line.qty
    if len(demand) == 1:  # first the atomic guarded update of one row, with no lookup before it
        [(item, qty)] = demand.items()
        params: dict[str, Any] = {
            "sku": item.sku,
            "location": item.location,
            "lot": item.lot,
            "qty": qty,
        }
        change = execute.attempt(
            session, request, SINGLE_ROW_TAKE_STATEMENTS[movement_type], params
        )
        if change is not None:
            return change
    resolved = resolve(session, warehouse, list(demand))
    ids = [resolved.ids(item) for item in demand]
    params = {
        "sku_ids": [sku for sku, _, _ in ids],
        "location_ids": [location for _, location, _ in ids],
        "lot_ids": [lot for _, _, lot in ids],
        "qtys": list(demand.values()),
    }
    return execute.run(session, request, TAKE_STATEMENTS[movement_type], params, resolved)


def refusal_kind(refused: Exception) -> str:
    """InsufficientStock -> insufficient_stock: the label of a refusal in the metrics."""
    name = type(refused).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _line(
    sku: object, qty: object, location: object, lot: object, *, prefix: str = ""
) -> OrderLine:
    return OrderLine(
        sku=validation.code(sku, field=f"{prefix}sku"),
        qty=validation.quantity(qty, field=f"{prefix}qty"),
        location=validation.optional_code(location, field=f"{prefix}location"),
        lot=validation.optional_code(lot, field=f"{prefix}lot"),
    )


def _measured_deduction(operation: str, run):
    sink = metrics.current()
    sink.deduction_attempted(operation)
    started = time.perf_counter()
    try:
        change = run()
    except ConcurrentConflict:  # retries exhausted: a failure to answer, counted by its absence
        raise
    except WarehouseError as refused:  # a stock rule answered no: an answer, not a failure
        sink.deduction_refused(operation, refusal_kind(refused))
        raise
    finally:
        sink.deduction_latency(operation, time.perf_counter() - started)
    sink.deduction_succeeded(operation)
    return change


@conflicts_are_retryable
def deduct(
    session: Session,
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
    """Pick `qty` of `sku` from available stock (on_hand - reserved); never below zero."""
    line = _line(sku, qty, location, lot)
    return _measured_deduction(
        "deduct",
        lambda: _take(
            session,
            movement_type="deduction",
            operation="deduct",
            warehouse=warehouse,
            lines=[line],
            key=key,
            occurred_at=occurred_at,
            reference=reference,
        ),
    )


@conflicts_are_retryable
def deduct_order(
    session: Session,
    *,
    warehouse: str,
    lines: Iterable[OrderLine | Mapping | tuple],
    key: str | None = None,
    occurred_at: datetime | None = None,
    reference: str | None = None,
) -> StockChange:
    """Deduct every line of an order or none: one statement, rows locked in key order.

    A line is an `OrderLine`, a mapping with sku/qty[/location/lot], or a (sku, qty) tuple.
    """
    parsed = [_order_line(number, raw) for number, raw in enumerate(lines, start=1)]
    if not parsed:
        raise InvalidArgument("an order needs at least one line")
    if len(parsed) > MAX_ORDER_LINES:
        raise InvalidArgument(f"an order has at most {MAX_ORDER_LINES} lines, got {len(parsed)}")
    return _measured_deduction(
        "deduct_order",
        lambda: _take(
            session,
            movement_type="deduction",
            operation="deduct_order",
            warehouse=warehouse,
            lines=parsed,
            key=key,
            occurred_at=occurred_at,
            reference=reference,
        ),
    )


def _order_line(number: int, raw: OrderLine | Mapping | tuple) -> OrderLine:
    prefix = f"line {number}: "
    if isinstance(raw, OrderLine):
        return _line(raw.sku, raw.qty, raw.location, raw.lot, prefix=prefix)
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"sku", "qty", "location", "lot"}
        if unknown:
            raise InvalidArgument(f"{prefix}unknown field(s) {sorted(unknown)}")
        return _line(
            raw.get("sku"), raw.get("qty"), raw.get("location"), raw.get("lot"), prefix=prefix
        )
    if isinstance(raw, tuple) and len(raw) in (2, 3, 4):
        return _line(*raw, *([None] * (4 - len(raw))), prefix=prefix)
    raise InvalidArgument(f"{prefix}{raw!r} is not an order line (sku, qty[, location[, lot]])")


@conflicts_are_retryable
def reserve(
    session: Session,
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
    """Set `qty` aside from available stock (FEFO when no location/lot is named)."""
    return _take(
        session,
        movement_type="reservation",
        operation="reserve",
        warehouse=warehouse,
        lines=[_line(sku, qty, location, lot)],
        key=key,
        occurred_at=occurred_at,
        reference=reference,
    )


@conflicts_are_retryable
def release(
    session: Session,
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
    """Give back `qty` of reserved stock to available (FEFO order when no location/lot)."""
    return _take(
        session,
        movement_type="release",
        operation="release",
        warehouse=warehouse,
        lines=[_line(sku, qty, location, lot)],
        key=key,
        occurred_at=occurred_at,
        reference=reference,
    )
