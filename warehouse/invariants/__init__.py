"""Set-based checks of DESIGN.md's invariants 1-3; `check()` returns every violation found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


_CHECKS: dict[str, str] = {
    # 1. The CHECK constraints make these impossible; the query proves nobody dropped them.
    "balance_range": """
        SELECT format('balance %s (warehouse %s, location %s, sku %s, lot %s): on_hand=%s reserved=%s',
                      b.id, w.code, l.code, s.code, coalesce(lot.code, '-'), b.on_hand, b.reserved)
        FROM stock_balance b
        JOIN warehouse w ON w.id = b.warehouse_id JOIN location l ON l.id = b.location_id
        JOIN sku s ON s.id = b.sku_id LEFT JOIN lot ON lot.id = b.lot_id
        WHERE b.on_hand < 0 OR b.reserved < 0 OR b.reserved > b.on_hand
    """,
    # 2a. Every balance equals its opening balance plus its retained movements (both on_hand and
    # reserved). Retention detaches whole closed months; the opening balance is the snapshot of
    # the newest retired month's last day, which the rollover keeps for exactly this (and which
    # holds every movement of the months before it: a month closes only once its last day's
    # verified snapshot does). With nothing retired the opening balance is zero.
    "balance_equals_ledger": """
        WITH anchor AS (
            SELECT CAST(max(month) + interval '1 month' - interval '1 day' AS date) AS day
            FROM history_month WHERE state IN ('archived', 'dropped')
        ),
        ledger AS (
            SELECT balance_id, sum(on_hand) AS on_hand, sum(reserved) AS reserved FROM (
                SELECT s.balance_id, s.on_hand, s.reserved FROM stock_snapshot s JOIN anchor ON s.snapshot_date = anchor.day
                UNION ALL
                SELECT balance_id, qty, reserved_qty FROM stock_movement
            ) retained GROUP BY balance_id
        )
        SELECT format('balance %s: on_hand=%s reserved=%s but opening balance plus ledger sum to on_hand=%s reserved=%s',
                      coalesce(b.id, ledger.balance_id), coalesce(b.on_hand, 0), coalesce(b.reserved, 0),
                      coalesce(ledger.on_hand, 0), coalesce(ledger.reserved, 0))
        FROM stock_balance b FULL OUTER JOIN ledger ON ledger.balance_id = b.id
        WHERE coalesce(b.on_hand, 0) <> coalesce(ledger.on_hand, 0)
           OR coalesce(b.reserved, 0) <> coalesce(ledger.reserved, 0)
    """,
    # 2b. Every stock operation wrote its outbox message. Messages are pruned after publishing
    # (issue 5), so only operations recorded since the oldest kept message can be checked.
    "movement_has_outbox_message": """
        SELECT format('operation %s (%s movement(s), recorded %s) has no outbox message',
                      m.operation_id, count(*), min(m.recorded_at))
        FROM stock_movement m
        WHERE m.recorded_at >= (SELECT min(created_at) FROM outbox_message) {recent}
          AND NOT EXISTS (SELECT 1 FROM outbox_message o WHERE o.operation_id = m.operation_id)
        GROUP BY m.operation_id
    """,
    # 3. A key applies once: all movements under a key belong to the one operation it recorded.
    # Keys expire (the rollover prunes them) and an expired key is free again, so movements under
    # a key no longer kept, or recorded before the key was last claimed, belong to an earlier
    # request and are not held against it (movement and key share their transaction's now()).
    "key_applied_once": """
        SELECT format('idempotency key %L has movements of operation(s) %s, recorded operation %s',
                      m.idempotency_key, string_agg(DISTINCT m.operation_id::text, ','),
                      coalesce(k.operation_id::text, 'none'))
        FROM stock_movement m
        JOIN idempotency_key k ON k.key = m.idempotency_key AND m.recorded_at >= k.created_at
        WHERE m.idempotency_key IS NOT NULL {recent}
        GROUP BY m.idempotency_key, k.operation_id
        HAVING count(DISTINCT m.operation_id) > 1 OR bool_or(m.operation_id IS DISTINCT FROM k.operation_id)
    """,
}


# Checks whose violations can only come from movements: an incremental check reads only those
# recorded since the last passing check (through the recorded_at index), never the whole ledger.
# A new key violation needs a new movement whose operation is not its key's; an older one was
# found by the check that covered it.
_RECENT = "AND m.recorded_at >= CAST(:since AS timestamptz)"
# Whole-ledger checks, replaced in an incremental check by the latest snapshot's check.
WHOLE_LEDGER = ("balance_equals_ledger",)


def check(session: Session, *, limit_per_check: int = 100, since: datetime | None = None) -> list[Violation]:
    """Every violation of invariants 1-3 (at most `limit_per_check` of each kind). With `since`,
    the movement checks read only movements recorded since then, and the whole-ledger checks
    are left to the caller (see `warehouse.stock.books`)."""
    violations: list[Violation] = []
    for name, query in _CHECKS.items():
        if since is not None and name in WHOLE_LEDGER:
            continue
        sql = query.replace("{recent}", _RECENT if since is not None else "")
        rows = session.execute(text(f"{sql} LIMIT :limit"), {"limit": limit_per_check, "since": since}).scalars()
        violations.extend(Violation(name, detail) for detail in rows)
    return violations
