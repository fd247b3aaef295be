"""Taking stock out of balances: deduct (pick), deduct_order, reserve, release.

Without a location or lot the quantity is allocated FEFO across the warehouse's bins and lots
(earliest expiry, then oldest receipt), all or nothing, in one statement (see statements.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from warehouse.db.retry import conflicts_are_retryable
from warehouse.errors import ConcurrentConflict, InvalidArgument, WarehouseError
from warehouse.metrics import sinks as metrics
from warehouse.stock import execute, validation
from warehouse.stock.resolve import Item, Resolved, resolve
from warehouse.stock.result import StockChange
from warehouse.stock.statements import SINGLE_ROW_TAKE_STATEMENTS, TAKE_STATEMENTS

MAX_ORDER_LINES = 10_000


@dataclass(frozen=True)
class OrderLine:
    sku: str
    qty: int
    location: str | None = None
    lot: str | None = None


# The movement each take operation books.
MOVEMENT_TYPES = {
    "deduct": "deduction",
    "deduct_order": "deduction",
    "reserve": "reservation",
    "release": "release",
}


@dataclass(frozen=True)
class Take:
    """A take operation validated, as both paths (a Session's, and `stock.direct`) run it."""

    movement_type: str
    request: execute.Request
    # Identical (sku, location, lot) lines are one demand; the statement allocates per demand.
    demand: dict[Item, int]

    def single_row(self) -> dict[str, Any] | None:
        """The parameters of the single-row statement, for a take of one demand; else None."""
        if len(self.demand) != 1:
            return None
        [(item, qty)] = self.demand.items()
        return {"sku": item.sku, "location": item.location, "lot": item.lot, "qty": qty}

    def allocating(self, resolved: Resolved) -> dict[str, Any]:
        """The parameters of the allocating (row-locking) statement."""
        ids = [resolved.ids(item) for item in self.demand]
        return {
            "sku_ids": [sku for sku, _, _ in ids],
            "location_ids": [location for _, location, _ in ids],
            "lot_ids": [lot for _, _, lot in ids],
            "qtys": list(self.demand.values()),
        }


def plan(
    operation: str,
    *,
    warehouse: str,
    lines: list[OrderLine],
    key: str | None,
    occurred_at: datetime | None,
    reference: str | None,
) -> Take:
    warehouse = validation.code(warehouse, field="warehouse")
    request = execute.request(
        operation,
        warehouse,
        {"lines": [[line.sku, line.qty, line.location, line.lot] for line in lines]},
        key=key,
        occurred_at=occurred_at,
        reference=reference,
    )
    demand: dict[Item, int] = {}
    for line in lines:
        item = Item(line.sku, line.location, line.lot)
        demand[item] = demand.get(item, 0) + line.qty
    return Take(MOVEMENT_TYPES[operation], request, demand)


def take(session: Session, planned: Take) -> StockChange:
    """Run a take in the session's transaction: a replay, else first the atomic guarded update
    of one row (no lookup before it), else the allocating statement."""
    replay = execute.start(session, planned.request)
    if replay is not None:
        return replay
    single = planned.single_row()
    if single is not None:
        change = execute.attempt(
            session, planned.request, SINGLE_ROW_TAKE_STATEMENTS[planned.movement_type], single
        )
        if change is not None:
            return change
    resolved = resolve(session, planned.request.warehouse, list(planned.demand))
    return execute.run(
        session,
        planned.request,
        TAKE_STATEMENTS[planned.movement_type],
        planned.allocating(resolved),
        resolved,
    )


def refusal_kind(refused: Exception) -> str:
    """InsufficientStock -> insufficient_stock: the label of a refusal in the metrics."""
    name = type(refused).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def one_line(
    sku: object, qty: object, location: object, lot: object, *, prefix: str = ""
) -> OrderLine:
    return OrderLine(
        sku=validation.code(sku, field=f"{prefix}sku"),
        qty=validation.quantity(qty, field=f"{prefix}qty"),
        location=validation.optional_code(location, field=f"{prefix}location"),
        lot=validation.optional_code(lot, field=f"{prefix}lot"),
    )


def measured_deduction(operation: str, run: Callable[[], StockChange]) -> StockChange:
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


# How a path runs a planned take: in a caller's Session (`take`), or directly (`DirectStock`).
Runner = Callable[[Take], StockChange]


def deduct_with(
    run: Runner,
    *,
    warehouse: str,
    sku: str,
    qty: int,
    location: str | None,
    lot: str | None,
    key: str | None,
    occurred_at: datetime | None,
    reference: str | None,
) -> StockChange:
    """A deduction on `run`'s path: the line checked first (a malformed call is no attempt),
    then planned and run under the deduction metrics."""
    line = one_line(sku, qty, location, lot)
    return measured_deduction(
        "deduct",
        lambda: run(
            plan(
                "deduct",
                warehouse=warehouse,
                lines=[line],
                key=key,
                occurred_at=occurred_at,
                reference=reference,
            )
        ),
    )


def deduct_order_with(
    run: Runner,
    *,
    warehouse: str,
    lines: Iterable[OrderLine | Mapping | tuple],
    key: str | None,
    occurred_at: datetime | None,
    reference: str | None,
) -> StockChange:
    """An order's deduction on `run`'s path, as `deduct_with`."""
    parsed = order_lines(lines)
    return measured_deduction(
        "deduct_order",
        lambda: run(
            plan(
                "deduct_order",
                warehouse=warehouse,
                lines=parsed,
                key=key,
                occurred_at=occurred_at,
                reference=reference,
            )
        ),
    )


def one_line_with(
    run: Runner,
    operation: str,
    *,
    warehouse: str,
    sku: str,
    qty: int,
    location: str | None,
    lot: str | None,
    key: str | None,
    occurred_at: datetime | None,
    reference: str | None,
) -> StockChange:
    """A reservation or release on `run`'s path (they are not deductions: no deduction metrics)."""
    return run(
        plan(
            operation,
            warehouse=warehouse,
            lines=[one_line(sku, qty, location, lot)],
            key=key,
            occurred_at=occurred_at,
            reference=reference,
        )
    )


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
    return deduct_with(
        lambda planned: take(session, planned),
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
    return deduct_order_with(
        lambda planned: take(session, planned),
        warehouse=warehouse,
        lines=lines,
        key=key,
        occurred_at=occurred_at,
        reference=reference,
    )


def order_lines(lines: Iterable[OrderLine | Mapping | tuple]) -> list[OrderLine]:
    """An order's lines validated: at least one, at most MAX_ORDER_LINES, each named by number."""
    parsed = [_order_line(number, raw) for number, raw in enumerate(lines, start=1)]
    if not parsed:
        raise InvalidArgument("an order needs at least one line")
    if len(parsed) > MAX_ORDER_LINES:
        raise InvalidArgument(f"an order has at most {MAX_ORDER_LINES} lines, got {len(parsed)}")
    return parsed


def _order_line(number: int, raw: OrderLine | Mapping | tuple) -> OrderLine:
    prefix = f"line {number}: "
    if isinstance(raw, OrderLine):
        return one_line(raw.sku, raw.qty, raw.location, raw.lot, prefix=prefix)
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"sku", "qty", "location", "lot"}
        if unknown:
            raise InvalidArgument(f"{prefix}unknown field(s) {sorted(unknown)}")
        return one_line(
            raw.get("sku"), raw.get("qty"), raw.get("location"), raw.get("lot"), prefix=prefix
        )
    if isinstance(raw, tuple) and len(raw) in (2, 3, 4):
        return one_line(*raw, *([None] * (4 - len(raw))), prefix=prefix)
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
    return one_line_with(
        lambda planned: take(session, planned),
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
    return one_line_with(
        lambda planned: take(session, planned),
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
