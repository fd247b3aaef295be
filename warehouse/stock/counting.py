"""Cycle count of one location: the counted rows locked in key order, each set to its count."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy.orm import Session

from warehouse.db.retry import conflicts_are_retryable
from warehouse.errors import InvalidArgument
from warehouse.stock import execute, validation
from warehouse.stock.resolve import Item, resolve
from warehouse.stock.result import StockChange
from warehouse.stock.statements import COUNT_STATEMENT, ENSURE_ROWS


@conflicts_are_retryable
def count(
    session: Session,
    *,
    warehouse: str,
    location: str,
    sku: str | None = None,
    qty: int | None = None,
    lot: str | None = None,
    lines: Iterable[Mapping | tuple] | None = None,
    complete: bool = False,
    key: str | None = None,
    occurred_at: datetime | None = None,
    reference: str | None = None,
) -> StockChange:
    """Record what was counted in bin `location`: one item (`sku`, `qty`, `lot`) or `lines` of
    (sku, qty[, lot]) / mappings. Each counted row becomes its count; the difference is written
    as a `count` movement. With `complete=True` the count covers the whole bin, so rows not
    listed are counted as zero. A count below the reserved quantity also cuts the reservation.
    """
    warehouse = validation.code(warehouse, field="warehouse")
    location = validation.code(location, field="location")
    counted = _counted(sku, qty, lot, lines)
    if not counted and not complete:
        raise InvalidArgument(
            "a count needs at least one counted item (or complete=True for an empty bin)"
        )
    request = execute.request(
        "count",
        warehouse,
        {
            "location": location,
            "counted": sorted([item.sku, item.lot or "", n] for item, n in counted.items()),
            "complete": bool(complete),
        },
        key=key,
        occurred_at=occurred_at,
        reference=reference,
    )
    replay = execute.start(session, request)
    if replay is not None:
        return replay
    resolved = resolve(session, warehouse, list(counted), locations=(location,))
    location_id = resolved.locations[location]
    ids = [resolved.ids(item) for item in counted]
    found = [
        (sku_id, lot_id)
        for (sku_id, _, lot_id), n in zip(ids, counted.values(), strict=True)
        if n > 0
    ]
    if found:
        session.execute(
            ENSURE_ROWS,
            {
                "warehouse_id": resolved.warehouse_id,
                "occurred_at": request.occurred_at,
                "location_ids": [location_id] * len(found),
                "sku_ids": [sku_id for sku_id, _ in found],
                "lot_ids": [lot_id for _, lot_id in found],
            },
        )
    params = {
        "location_id": location_id,
        "complete": bool(complete),
        "sku_ids": [sku_id for sku_id, _, _ in ids],
        "lot_ids": [lot_id for _, _, lot_id in ids],
        "counted": list(counted.values()),
    }
    return execute.run(session, request, COUNT_STATEMENT, params, resolved)


def _counted(sku, qty, lot, lines) -> dict[Item, int]:
    """The counted items (sku and lot, no location) with their counts, each checked."""
    entries: list[tuple[str, object, object, object]] = []  # (error prefix, sku, qty, lot)
    if sku is not None or qty is not None:
        entries.append(("", sku, qty, lot))
    for number, line in enumerate(lines or [], start=1):
        prefix = f"count line {number}: "
        if isinstance(line, Mapping):
            unknown = set(line) - {"sku", "qty", "lot"}
            if unknown:
                raise InvalidArgument(f"{prefix}unknown field(s) {sorted(unknown)}")
            entries.append((prefix, line.get("sku"), line.get("qty"), line.get("lot")))
        elif isinstance(line, tuple) and len(line) in (2, 3):
            entries.append((prefix, line[0], line[1], line[2] if len(line) == 3 else None))
        else:
            raise InvalidArgument(f"{prefix}{line!r} is not (sku, qty[, lot])")
    counted: dict[Item, int] = {}
    for prefix, raw_sku, raw_qty, raw_lot in entries:
        item = Item(
            validation.code(raw_sku, field=f"{prefix}sku"),
            None,
            validation.optional_code(raw_lot, field=f"{prefix}lot"),
        )
        if item in counted:
            raise InvalidArgument(f"{prefix}sku {item.sku!r} lot {item.lot!r} is counted twice")
        counted[item] = validation.quantity(raw_qty, field=f"{prefix}qty", allow_zero=True)
    return counted
