"""Changes of named balance rows: receive, adjust (signed, with a reason), transfer between bins.

Each is: insert any missing balance rows (no lock on existing ones), then one statement that
locks the rows in key order, checks the new values and writes balance, ledger and outbox.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from warehouse.db.retry import conflicts_are_retryable
from warehouse.errors import InvalidArgument
from warehouse.stock import execute, validation
from warehouse.stock.resolve import Item, Resolved, resolve
from warehouse.stock.result import StockChange
from warehouse.stock.statements import DELTA_STATEMENT, ENSURE_ROWS


def _required_location(location: object) -> str:
    if location is None:
        raise InvalidArgument(
            "location is required: stock is received, adjusted and moved in a named bin"
        )
    return validation.code(location, field="location")


def _apply_deltas(
    session: Session,
    request: execute.Request,
    resolved: Resolved,
    deltas: list[tuple[Item, int, str]],
) -> StockChange:
    """Apply (item, signed on_hand delta, movement type) rows; rows gaining stock are created."""
    ids = [resolved.ids(item) for item, _, _ in deltas]
    growing = [
        (location, sku, lot)
        for (sku, location, lot), (_, delta, _) in zip(ids, deltas, strict=True)
        if delta > 0
    ]
    if growing:
        session.execute(
            ENSURE_ROWS,
            {
                "warehouse_id": resolved.warehouse_id,
                "occurred_at": request.occurred_at,
                "location_ids": [row[0] for row in growing],
                "sku_ids": [row[1] for row in growing],
                "lot_ids": [row[2] for row in growing],
            },
        )
    params = {
        "location_ids": [location for _, location, _ in ids],
        "sku_ids": [sku for sku, _, _ in ids],
        "lot_ids": [lot for _, _, lot in ids],
        "on_hand_deltas": [delta for _, delta, _ in deltas],
        "reserved_deltas": [0 for _ in deltas],
        "movement_types": [movement_type for _, _, movement_type in deltas],
    }
    return execute.run(session, request, DELTA_STATEMENT, params, resolved)


def _request(
    operation, warehouse, key, occurred_at, reference, reason=None, **arguments
) -> execute.Request:
    return execute.request(
        operation,
        warehouse,
        {**arguments, "reason": reason},
        key=key,
        occurred_at=occurred_at,
        reference=reference,
        reason=reason,
    )


@conflicts_are_retryable
def receive(
    session: Session,
    *,
    warehouse: str,
    sku: str,
    qty: int,
    location: str,
    lot: str | None = None,
    key: str | None = None,
    occurred_at: datetime | None = None,
    reference: str | None = None,
) -> StockChange:
    """Put `qty` of `sku` (of `lot`, when lot-tracked) into bin `location`."""
    warehouse = validation.code(warehouse, field="warehouse")
    item = Item(
        validation.code(sku, field="sku"),
        _required_location(location),
        validation.optional_code(lot, field="lot"),
    )
    qty = validation.quantity(qty)
    request = _request(
        "receive",
        warehouse,
        key,
        occurred_at,
        reference,
        sku=item.sku,
        qty=qty,
        location=item.location,
        lot=item.lot,
    )
    replay = execute.start(session, request)
    if replay is not None:
        return replay
    resolved = resolve(session, warehouse, [item])
    return _apply_deltas(session, request, resolved, [(item, qty, "receipt")])


@conflicts_are_retryable
def adjust(
    session: Session,
    *,
    warehouse: str,
    sku: str,
    qty: int,
    location: str,
    reason: str,
    lot: str | None = None,
    key: str | None = None,
    occurred_at: datetime | None = None,
    reference: str | None = None,
) -> StockChange:
    """Correct on_hand by a signed `qty` (damage, found stock, a decided ERP difference).

    A negative adjustment takes only unreserved stock: cut the reservation first if it must go.
    """
    warehouse = validation.code(warehouse, field="warehouse")
    item = Item(
        validation.code(sku, field="sku"),
        _required_location(location),
        validation.optional_code(lot, field="lot"),
    )
    qty = validation.quantity(qty, signed=True)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidArgument(f"reason={reason!r}: an adjustment needs a reason (1-500 characters)")
    reason = validation.text_value(reason, field="reason", max_length=500)
    request = _request(
        "adjust",
        warehouse,
        key,
        occurred_at,
        reference,
        reason,
        sku=item.sku,
        qty=qty,
        location=item.location,
        lot=item.lot,
    )
    replay = execute.start(session, request)
    if replay is not None:
        return replay
    resolved = resolve(session, warehouse, [item])
    return _apply_deltas(session, request, resolved, [(item, qty, "adjustment")])


@conflicts_are_retryable
def transfer(
    session: Session,
    *,
    warehouse: str,
    sku: str,
    qty: int,
    location: str,
    to_location: str,
    lot: str | None = None,
    key: str | None = None,
    occurred_at: datetime | None = None,
    reference: str | None = None,
) -> StockChange:
    """Move `qty` of available stock from bin `location` to bin `to_location`, atomically."""
    warehouse = validation.code(warehouse, field="warehouse")
    sku = validation.code(sku, field="sku")
    lot = validation.optional_code(lot, field="lot")
    source = Item(sku, _required_location(location), lot)
    target = Item(sku, validation.code(to_location, field="to_location"), lot)
    if source.location == target.location:
        raise InvalidArgument(f"transfer from {source.location!r} to itself changes nothing")
    qty = validation.quantity(qty)
    request = _request(
        "transfer",
        warehouse,
        key,
        occurred_at,
        reference,
        sku=sku,
        qty=qty,
        location=source.location,
        to_location=target.location,
        lot=lot,
    )
    replay = execute.start(session, request)
    if replay is not None:
        return replay
    resolved = resolve(session, warehouse, [source, target])
    return _apply_deltas(
        session, request, resolved, [(source, -qty, "transfer_out"), (target, qty, "transfer_in")]
    )
