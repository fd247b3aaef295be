"""Runs one stock statement under an optional idempotency key and turns its answer into a
`StockChange` or a domain error. Nothing here commits: the caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from .. import idempotency
from ..errors import InsufficientStock
from .resolve import Resolved
from .result import MovementLine, StockChange
from .statements import COMPILED


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


def replay_or_claim(session: Session, request: Request) -> StockChange | None:
    """With a key: the first result if this request was applied before, else None (go on)."""
    if request.key is None:
        return None
    first = idempotency.claim(session, request.key, request.operation, request.arguments)
    if first is None:
        return None
    lines = tuple(MovementLine.from_json(item) for item in first.result or [])
    return StockChange(request.operation, request.warehouse, first.operation_id, lines, request.key, replayed=True)


def run(session: Session, request: Request, statement: str, params: dict[str, Any], resolved: Resolved) -> StockChange:
    bound = {
        **params,
        "warehouse_id": resolved.warehouse_id,
        "warehouse": request.warehouse,
        "operation": request.operation,
        "key": request.key,
        "occurred_at": request.occurred_at,
        "reference": request.reference,
        "reason": request.reason,
    }
    row = session.execute(COMPILED[statement], bound).one()
    if not row.ok:
        if request.key is not None:
            idempotency.forget(session, request.key)
        raise _refusal(request, resolved, row.problems)
    if row.moved_rows != row.planned_rows:
        # The guard in the UPDATE refused a row the locked read approved: never expected, so
        # fail loudly; the caller's rollback undoes the rows that did change.
        raise RuntimeError(
            f"{request.operation}: planned {row.planned_rows} balance rows but changed {row.moved_rows}"
        )
    lines = tuple(MovementLine.from_json(item) for item in row.items)
    return StockChange(request.operation, request.warehouse, row.operation_id, lines, request.key)


def _refusal(request: Request, resolved: Resolved, problems: list[dict[str, Any]]) -> InsufficientStock:
    skus = {ident: code for code, ident in resolved.skus.items()}
    locations = {ident: code for code, ident in resolved.locations.items()}
    lots = {ident: code for (_, code), ident in resolved.lots.items()}
    first = problems[0]
    where = []
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


