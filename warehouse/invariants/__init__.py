"""The promises cangflow keeps about stock, each with where it is enforced, and `check()`: the
set-based proof of promises 1-3 over the whole database (every violation found, not the first).

1. Stock never goes negative: `0 <= reserved <= on_hand` on every balance row.
   Constraint: `ck_stock_balance_*` (migration 0001). Statement: the guarded UPDATEs of
   `warehouse/stock/statements.py` refuse before the constraint would. Suite:
   `expectations/stock_balance.py`. Check: `balance_range` below. Tests:
   `tests/integration/test_concurrency.py` (16 workers, with a naive negative control).
2. The ledger equals the balance: each balance is its opening balance plus its retained
   movements, written by one statement with its outbox message. Statement: the CTEs of
   `warehouse/stock/statements.py`. Checks: `balance_equals_ledger`,
   `movement_has_outbox_message` and `movement_lot_is_its_balances` (a lot-less movement on a
   lotted balance row, which no foreign key checks) below, run by the books check
   (`warehouse/stock/books.py`, the nightly's gate). Tests: `tests/integration/test_stateful.py`,
   `test_stress.py`.
3. A key applies once: a repeat returns the first result, other arguments are a conflict.
   Constraint: the primary key of `idempotency_key`. Statement: `warehouse/stock/idempotency.py`.
   Check: `key_applied_once` below. Tests: `tests/integration/test_operations.py` (repeated and conflicting keys).
4. A refused call writes nothing, not even its key. Statement: `warehouse/stock/execute.py`
   (a refusal rolls back to before the claim). Tests: `tests/integration/test_refusals.py`.
5. Closed history is read-only, in the database. Trigger: `cangflow_refuse_closed_history`
   (migrations 0002, 0010; attached by `warehouse/history/closing.py`). Privileges: the app role
   may not update, delete, truncate or alter the ledger (`warehouse/db/roles.py`). Tests:
   `tests/integration/test_history.py`, `test_roles.py`.
6. The books add up across retention: no change dated before the history floor, and the
   opening balance plus the retained movements is the balance. Trigger:
   `cangflow_refuse_retired_history` (migration 0007). Check: `balance_equals_ledger`.
   Tests: `tests/integration/test_history.py` (month 25), `tests/flows/test_lifecycle.py`.
7. Every job can be killed and rerun without doubling. Statement: unique keys and
   `ON CONFLICT` in each job's writes. Tests: `tests/flows/test_snapshot_kill.py`,
   `test_reconcile_kill.py`.
"""

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
    # 2c. A movement is of its balance row's lot. The composite key fk_stock_movement_balance_lot
    # (migration 0006) refuses another lot, but PostgreSQL checks no foreign key with a NULL
    # column, so a lot-less movement on a lotted row is found here instead (a trigger on every
    # ledger insert would cost the hot path a lookup for what the statements never write).
    "movement_lot_is_its_balances": """
        SELECT format('movement %s (operation %s) has no lot, but its balance %s holds lot %s',
                      m.id, m.operation_id, b.id, lot.code)
        FROM stock_movement m
        JOIN stock_balance b ON b.id = m.balance_id
        JOIN lot ON lot.id = b.lot_id
        WHERE m.lot_id IS NULL {recent}
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


def check(
    session: Session, *, limit_per_check: int = 100, since: datetime | None = None
) -> list[Violation]:
    """Every violation of invariants 1-3 (at most `limit_per_check` of each kind). With `since`,
    the movement checks read only movements recorded since then, and the whole-ledger checks
    are left to the caller (see `warehouse.stock.books`)."""
    violations: list[Violation] = []
    for name, query in _CHECKS.items():
        if since is not None and name in WHOLE_LEDGER:
            continue
        sql = query.replace("{recent}", _RECENT if since is not None else "")
        rows = session.execute(
            text(f"{sql} LIMIT :limit"), {"limit": limit_per_check, "since": since}
        ).scalars()
        violations.extend(Violation(name, detail) for detail in rows)
    return violations
