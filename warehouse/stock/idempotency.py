"""Idempotency keys: a request with a key applies once; a repeat returns the first result.

The key row is inserted in the operation's own transaction. A concurrent repeat blocks on the
unique key until the first commits (then it replays) or rolls back (then it applies itself), so
there is no window in which both apply.

The direct path (`warehouse.stock.direct`) claims a key in the applying statement itself,
with the result, by the same request hash: a repeat fails that INSERT on the unique key and is
handed to the Session path here, which replays or refuses it.

Keys expire after `idempotency_retention_days` (30 by default): the rollover flow prunes them
in batches. A request repeated after its key expired is a new request and applies again.

A key row gets its result in the same statement that applies the operation. A row without a
result is a claim whose request was refused (unknown item, closed month, a bad value) in a
transaction the caller committed anyway: it is never replayed; the next request with that key
takes it over and applies, so a refused call leaves its key free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, text
from sqlalchemy.orm import Session

from warehouse.db.engine import Database
from warehouse.errors import IdempotencyConflict
from warehouse.stock.validation import text_value

KEY_MAX_LENGTH = 200


@dataclass(frozen=True)
class FirstResult:
    operation_id: int | None
    result: Any


def request_hash(operation: str, arguments: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"operation": operation, "arguments": arguments}, sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: object) -> str | None:
    if key is None:
        return None
    return text_value(key, field="key", max_length=KEY_MAX_LENGTH)


_INSERT = text(
    "INSERT INTO idempotency_key (key, operation, request_hash) VALUES (:key, :operation, :digest) "
    "ON CONFLICT (key) DO NOTHING RETURNING key"
)
_FIRST = text(
    "SELECT operation, request_hash, operation_id, result FROM idempotency_key WHERE key = :key"
)
# Waits for a concurrent taker of the same row; if that one applied, the row has a result now.
_TAKE_OVER = text(
    "UPDATE idempotency_key SET operation = :operation, request_hash = :digest, operation_id = NULL, "
    "created_at = now() WHERE key = :key AND result IS NULL RETURNING key"
)


def claim(
    session: Session, key: str, operation: str, arguments: dict[str, Any]
) -> FirstResult | None:
    """Claim `key` for this request. None: go ahead and apply. Otherwise the first result.

    A replay reads the row without locking it; only a row without a result (a refused claim
    that was committed) is taken over, with an UPDATE that locks it."""
    bound = {"key": key, "operation": operation, "digest": request_hash(operation, arguments)}
    if session.execute(_INSERT, bound).first() is not None:
        return None
    first = session.execute(_FIRST, bound).one()
    if first.result is None:
        if session.execute(_TAKE_OVER, bound).first() is not None:
            return None
        first = session.execute(_FIRST, bound).one()  # a concurrent request took it and applied
    if first.operation != operation or first.request_hash != bound["digest"]:
        raise IdempotencyConflict(key, first_operation=first.operation, operation=operation)
    return FirstResult(first.operation_id, first.result)


def forget(session: Session, key: str) -> None:
    """Drop a claim whose request was refused, so the refusal leaves nothing behind."""
    session.execute(
        text("DELETE FROM idempotency_key WHERE key = :key AND result IS NULL"), {"key": key}
    )


PRUNE_BATCH = 10_000


def prune_expired_keys(db: Database, *, older_than: datetime, batch: int = PRUNE_BATCH) -> int:
    """Every key created before `older_than`, deleted `batch` at a time, each batch its own
    transaction (like the retention steps), so a long prune never holds many row locks and a
    killed one has kept what it did. Returns how many were deleted."""
    pruned = 0
    while True:
        with db.session() as session:
            deleted = prune_expired(session, older_than=older_than, batch=batch)
        pruned += deleted
        if deleted < batch:
            return pruned


def prune_expired(session: Session, *, older_than: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` keys created before `older_than`; rows another transaction holds
    are skipped."""
    # Session.execute is typed as returning a Result; a DML statement's is a CursorResult.
    return cast(
        CursorResult[Any],
        session.execute(
            text(
                "DELETE FROM idempotency_key WHERE key IN (SELECT key FROM idempotency_key WHERE created_at < :cutoff "
                "ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED)"
            ),
            {"cutoff": older_than, "batch": batch},
        ),
    ).rowcount
