"""Adjustment orders from a run's differences: one order per warehouse per run, one line per
difference beyond tolerance. Rerunning any step creates nothing twice (unique keys, ON CONFLICT).

- WMS truth: the lines are for the ERP (`for_erp`); each new order is published through the
  outbox (topic `erp.adjustment`) in the transaction that creates it. WMS stock is unchanged.
- ERP truth: a line within `auto_approve_limit` is approved and applied to WMS stock through
  `stock.adjust`; a larger one waits as `pending_approval` for a person.
- A run over the blast-radius brake holds every line (`held`) for a person, whatever the truth:
  approving an ERP-truth line applies it, approving a WMS-truth line sends it to the ERP (one
  outbox message per line, in the approving transaction).

A difference of a SKU the feed did not mention is reported, not adjusted, unless the run was
told the feed is complete (`full_feed`): a truncated feed must never zero stock by omission.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse import stock
from warehouse.catalog import ensure_location
from warehouse.db.engine import Database
from warehouse.errors import InvalidArgument, WarehouseError

ERP_TOPIC = "erp.adjustment"

_MAKE = text("""
WITH open_lines AS (
    -- Lines of earlier runs still waiting: for a person (ERP truth) or for the ERP (WMS truth).
    SELECT l.id, l.warehouse_id, l.sku_id, l.lot_id, l.wms_qty, l.erp_qty, l.status
    FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
    WHERE l.status IN ('pending_approval', 'held', 'for_erp') AND o.run_id <> :run
),
candidates AS (
    SELECT d.* FROM reconciliation_difference d
    WHERE d.run_id = :run AND NOT d.within_tolerance AND (d.kind <> 'not_in_feed' OR :full_feed)
),
already_asked AS (
    -- WMS truth: the ERP was sent this very difference and has not acknowledged it; not again.
    SELECT c.warehouse_id, c.sku_id, c.lot_id FROM candidates c JOIN open_lines l
      ON l.warehouse_id = c.warehouse_id AND l.sku_id = c.sku_id AND l.lot_id IS NOT DISTINCT FROM c.lot_id
     AND l.status = 'for_erp' AND l.wms_qty = c.wms_qty AND l.erp_qty IS NOT DISTINCT FROM c.erp_qty
    WHERE :truth = 'wms'
),
due AS (
    SELECT c.* FROM candidates c
    WHERE NOT EXISTS (SELECT 1 FROM already_asked a WHERE a.warehouse_id = c.warehouse_id AND a.sku_id = c.sku_id
                                                      AND a.lot_id IS NOT DISTINCT FROM c.lot_id)
),
superseded AS (
    -- This run found the same difference (warehouse, sku, lot) again, beyond tolerance or not:
    -- the older open line is replaced, so no difference is approved or sent twice.
    UPDATE adjustment_order_line l SET status = 'superseded', superseded_by_run = :run,
           reason = l.reason || '; superseded by run ' || CAST(:run AS text)
    FROM open_lines o
    WHERE l.id = o.id
      -- Re-checked on the row as locked: a line approved and applied meanwhile stays applied.
      AND l.status IN ('pending_approval', 'held', 'for_erp')
      AND EXISTS (SELECT 1 FROM reconciliation_difference d WHERE d.run_id = :run AND d.warehouse_id = o.warehouse_id
                  AND d.sku_id = o.sku_id AND d.lot_id IS NOT DISTINCT FROM o.lot_id)
      AND NOT EXISTS (SELECT 1 FROM already_asked a WHERE a.warehouse_id = o.warehouse_id AND a.sku_id = o.sku_id
                      AND a.lot_id IS NOT DISTINCT FROM o.lot_id)
    RETURNING l.id
),
orders AS (
    INSERT INTO adjustment_order (run_id, warehouse_id, truth)
    SELECT DISTINCT :run, warehouse_id, :truth FROM due
    ON CONFLICT (run_id, warehouse_id) DO NOTHING
    RETURNING id, warehouse_id
),
lines AS (
    INSERT INTO adjustment_order_line (order_id, warehouse_id, sku_id, lot_id, wms_qty, erp_qty, delta, status, reason)
    SELECT o.id, d.warehouse_id, d.sku_id, d.lot_id, d.wms_qty, d.erp_qty, d.delta,
           CASE WHEN :held THEN 'held'
                WHEN :truth = 'wms' THEN 'for_erp'
                WHEN abs(d.delta) <= :auto_limit THEN 'approved'
                ELSE 'pending_approval' END,
           CASE d.kind WHEN 'not_in_feed' THEN 'not in the ERP feed (feed declared complete)'
                       WHEN 'not_in_wms' THEN 'booked in the ERP, none in the WMS'
                       ELSE 'ERP and WMS differ' END
    FROM due d JOIN orders o ON o.warehouse_id = d.warehouse_id
    RETURNING order_id, sku_id, lot_id, wms_qty, erp_qty, delta, status
),
published AS (
    INSERT INTO outbox_message (topic, message_key, payload)
    SELECT :topic, w.code, jsonb_build_object(
               'order_id', o.id, 'run_id', CAST(:run AS bigint), 'warehouse', w.code,
               'as_of', CAST(:as_of AS timestamptz),
               'lines', (SELECT jsonb_agg(jsonb_build_object(
                                 'sku', s.code, 'lot', lot.code, 'wms_qty', l.wms_qty, 'erp_qty', l.erp_qty,
                                 'target_qty', l.wms_qty, 'erp_adjustment', -l.delta) ORDER BY s.code, lot.code)
                         FROM lines l JOIN sku s ON s.id = l.sku_id LEFT JOIN lot ON lot.id = l.lot_id
                         WHERE l.order_id = o.id))
    FROM orders o JOIN warehouse w ON w.id = o.warehouse_id
    WHERE :truth = 'wms' AND NOT :held
    RETURNING 1
)
SELECT (SELECT count(*) FROM orders) AS orders, (SELECT count(*) FROM lines) AS lines,
       (SELECT count(*) FROM published) AS published, (SELECT count(*) FROM superseded) AS superseded,
       (SELECT count(*) FROM already_asked) AS already_asked
""")


@dataclass(frozen=True)
class Made:
    orders: int
    lines: int
    published: int
    superseded: int = 0  # open lines of earlier runs this run replaced
    already_asked: int = 0  # differences the ERP was sent before and has not acknowledged


def make_orders(
    session: Session,
    run_id: int,
    *,
    truth: str,
    auto_approve_limit: int,
    full_feed: bool,
    as_of,
    held: bool = False,
) -> Made:
    """`held`: the run is over the brake (`brake.check`): its lines wait for a person, nothing is
    applied (ERP truth) or published for the ERP (WMS truth)."""
    row = session.execute(
        _MAKE,
        {
            "run": run_id,
            "truth": truth,
            "auto_limit": auto_approve_limit,
            "held": held,
            "full_feed": full_feed,
            "topic": ERP_TOPIC,
            "as_of": as_of,
        },
    ).one()
    return Made(row.orders, row.lines, row.published, row.superseded, row.already_asked)


_LINE = text("""
SELECT l.id, l.status, l.delta, w.code AS warehouse, s.code AS sku, lot.code AS lot, o.run_id
FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
JOIN warehouse w ON w.id = l.warehouse_id JOIN sku s ON s.id = l.sku_id LEFT JOIN lot ON lot.id = l.lot_id
WHERE l.id = :line FOR UPDATE OF l
""")
# An earlier line of the same difference applied after this line's feed was cut: its adjustment
# is not in the WMS side of this line's diff (dated after as_of), so this line would repeat it.
_APPLIED_SINCE_CUT = text("""
SELECT p.id, po.run_id FROM adjustment_order_line l
JOIN adjustment_order o ON o.id = l.order_id JOIN reconciliation_run r ON r.id = o.run_id
JOIN adjustment_order_line p ON p.warehouse_id = l.warehouse_id AND p.sku_id = l.sku_id
                            AND p.lot_id IS NOT DISTINCT FROM l.lot_id AND p.id <> l.id
JOIN adjustment_order po ON po.id = p.order_id
WHERE l.id = :line AND p.status = 'applied' AND p.decided_at > r.as_of
ORDER BY p.id LIMIT 1
""")
# Bins holding the line's stock, most available first (a lot-less line spans every lot).
_BINS = text("""
SELECT loc.code AS location, lot.code AS lot, b.on_hand - b.reserved AS available
FROM stock_balance b JOIN location loc ON loc.id = b.location_id LEFT JOIN lot ON lot.id = b.lot_id
WHERE b.warehouse_id = (SELECT id FROM warehouse WHERE code = :warehouse)
  AND b.sku_id = (SELECT id FROM sku WHERE code = :sku)
  AND (CAST(:lot AS text) IS NULL OR lot.code = :lot)
ORDER BY b.on_hand - b.reserved DESC, b.id
""")
_DONE = text("""
UPDATE adjustment_order_line SET status = :status, movement_ids = :movements, reason = coalesce(:reason, reason),
       decided_by = coalesce(decided_by, :by), decided_at = coalesce(decided_at, now())
WHERE id = :line
""")


@dataclass(frozen=True)
class Applied:
    line_id: int
    status: str
    movement_ids: tuple[int, ...] = ()
    reason: str | None = None


def apply_line(
    session: Session, line_id: int, *, reconcile_location: str, by: str | None = None
) -> Applied:
    """Apply one approved line to WMS stock (ERP truth) with `stock.adjust`, bin by bin: a
    decrease takes from the bins with most available stock (reserved stock is never adjusted
    away), an increase goes to the bin holding most, or to the reconciliation bin. Every
    adjustment carries a key derived from the line, so a rerun after a crash replays it."""
    line = session.execute(_LINE, {"line": line_id}).one_or_none()
    if line is None:
        raise InvalidArgument(f"no adjustment order line {line_id}")
    if line.status != "approved":
        return Applied(line_id, line.status)
    earlier = session.execute(_APPLIED_SINCE_CUT, {"line": line_id}).first()
    if earlier is not None:
        reason = (
            f"line {earlier.id} of run {earlier.run_id} corrected this difference after this feed was cut; "
            "applying it again would repeat the correction: reconcile a newer feed"
        )
        session.execute(
            _DONE,
            {"line": line_id, "status": "failed", "movements": None, "reason": reason, "by": by},
        )
        return Applied(line_id, "failed", (), reason)
    bins = session.execute(
        _BINS, {"warehouse": line.warehouse, "sku": line.sku, "lot": line.lot}
    ).all()
    plan: list[tuple[str, str | None, int]] = []
    if line.delta > 0:
        target = bins[0] if bins else None
        location = target.location if target else reconcile_location
        if target is None:
            ensure_location(session, line.warehouse, location)
        plan.append((location, target.lot if target else line.lot, line.delta))
    else:
        needed = -line.delta
        for row in bins:
            if needed == 0:
                break
            take = min(needed, max(row.available, 0))
            if take:
                plan.append((row.location, row.lot, -take))
                needed -= take
        if needed:
            reason = f"only {-line.delta - needed} of {-line.delta} can be taken off: the rest is reserved or absent"
            session.execute(
                _DONE,
                {
                    "line": line_id,
                    "status": "failed",
                    "movements": None,
                    "reason": reason,
                    "by": by,
                },
            )
            return Applied(line_id, "failed", (), reason)
    movements = []
    try:
        for location, lot, qty in plan:
            change = stock.adjust(
                session,
                warehouse=line.warehouse,
                sku=line.sku,
                qty=qty,
                location=location,
                lot=lot,
                reason=f"ERP reconciliation run {line.run_id}, line {line_id}",
                key=f"reconcile-line-{line_id}-{location}-{lot or ''}",
            )
            movements += [m.movement_id for m in change.lines]
    except WarehouseError as refused:
        raise WarehouseError(
            f"adjustment order line {line_id} could not be applied: {refused}"
        ) from refused
    session.execute(
        _DONE,
        {"line": line_id, "status": "applied", "movements": movements, "reason": None, "by": by},
    )
    return Applied(line_id, "applied", tuple(movements))


_APPROVED = text("""
SELECT l.id FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
WHERE o.run_id = :run AND l.status = 'approved'
  AND (CAST(:warehouse_id AS bigint) IS NULL OR o.warehouse_id = :warehouse_id)
ORDER BY l.id
""")
_ORDER_WAREHOUSES = text(
    "SELECT warehouse_id FROM adjustment_order WHERE run_id = :run ORDER BY warehouse_id"
)


_WAITING = text("""
SELECT l.id FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
WHERE o.run_id = :run AND l.status IN ('pending_approval', 'held') ORDER BY l.id
""")


_ALL_WAITING = text("""
SELECT count(*) AS lines, coalesce(extract(epoch FROM now() - min(o.created_at)), 0) AS oldest
FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
WHERE l.status IN ('pending_approval', 'held')
""")


@dataclass(frozen=True)
class Waiting:
    lines: int
    oldest_age_seconds: float


def waiting(session: Session) -> Waiting:
    """Every line waiting for a person, of every run: how many, and how long the oldest has waited."""
    row = session.execute(_ALL_WAITING).one()
    return Waiting(row.lines, float(row.oldest))


def waiting_lines(session: Session, run_id: int) -> list[int]:
    """The run's lines waiting for a person (pending approval, or held by the brake)."""
    return list(session.execute(_WAITING, {"run": run_id}).scalars())


def approved_lines(session: Session, run_id: int, warehouse_id: int | None = None) -> list[int]:
    return list(session.execute(_APPROVED, {"run": run_id, "warehouse_id": warehouse_id}).scalars())


def order_warehouses(session: Session, run_id: int) -> list[int]:
    return list(session.execute(_ORDER_WAREHOUSES, {"run": run_id}).scalars())


_DECIDE = text("""
UPDATE adjustment_order_line l
SET status = CASE WHEN NOT :approve THEN 'rejected' WHEN o.truth = 'wms' THEN 'for_erp' ELSE 'approved' END,
    decided_by = :by, decided_at = now(),
    reason = CASE WHEN CAST(:note AS text) IS NULL THEN l.reason ELSE l.reason || '; ' || :note END
FROM adjustment_order o
WHERE o.id = l.order_id AND l.id = :line AND l.status IN ('pending_approval', 'held')
RETURNING l.status
""")
# A held WMS-truth line a person released: sent to the ERP like the lines of a run within the brake.
_RELEASE = text("""
INSERT INTO outbox_message (topic, message_key, payload)
SELECT :topic, w.code, jsonb_build_object(
           'order_id', o.id, 'run_id', o.run_id, 'warehouse', w.code, 'as_of', r.as_of, 'line_id', l.id,
           'lines', jsonb_build_array(jsonb_build_object(
               'sku', s.code, 'lot', lot.code, 'wms_qty', l.wms_qty, 'erp_qty', l.erp_qty,
               'target_qty', l.wms_qty, 'erp_adjustment', -l.delta)))
FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
JOIN reconciliation_run r ON r.id = o.run_id JOIN warehouse w ON w.id = l.warehouse_id
JOIN sku s ON s.id = l.sku_id LEFT JOIN lot ON lot.id = l.lot_id
WHERE l.id = :line
""")
_STATUS = text("""
SELECT l.status, l.superseded_by_run,
       (SELECT n.id FROM adjustment_order_line n JOIN adjustment_order o ON o.id = n.order_id
        WHERE o.run_id = l.superseded_by_run AND n.warehouse_id = l.warehouse_id AND n.sku_id = l.sku_id
          AND n.lot_id IS NOT DISTINCT FROM l.lot_id) AS newer_line
FROM adjustment_order_line l WHERE l.id = :line
""")


def decide(
    session: Session, line_id: int, *, approve: bool, by: str, note: str | None = None
) -> str:
    """A person's decision on a waiting line (pending approval, or held by the brake). Approving
    an ERP-truth line makes it `approved`, applied in the same transaction by the caller's
    `apply_line`; approving a WMS-truth line sends it to the ERP (`for_erp`). Deciding a line
    twice changes nothing the second time; the contrary decision on a line decided already
    (rejecting one approved, applied or sent to the ERP; approving one rejected) is refused, as
    is deciding a line a newer run superseded (its difference is the newer line's)."""
    changed = session.execute(
        _DECIDE, {"line": line_id, "approve": approve, "by": by, "note": note}
    ).first()
    if changed is not None and changed.status == "for_erp":
        session.execute(_RELEASE, {"line": line_id, "topic": ERP_TOPIC})
    if changed is None:
        line = session.execute(_STATUS, {"line": line_id}).first()
        if line is None:
            raise InvalidArgument(f"no adjustment order line {line_id}")
        if line.status == "superseded":
            newer = (
                f", line {line.newer_line}"
                if line.newer_line
                else " (which found nothing left to order)"
            )
            raise InvalidArgument(
                f"line {line_id} was superseded by run {line.superseded_by_run}{newer}: "
                "decide on the newest line of that difference (`cangflow adjustments list`)"
            )
        contrary = line.status == "rejected" if approve else line.status != "rejected"
        if contrary:
            raise InvalidArgument(
                f"line {line_id} is {line.status} already: only a line waiting for approval "
                f"can be {'approved' if approve else 'rejected'}"
            )
        return line.status
    return changed.status


def settle(
    session: Session,
    line_id: int,
    *,
    approve: bool,
    by: str,
    reconcile_location: str,
    note: str | None = None,
) -> Applied:
    """The approval path, for a person (`cangflow adjustments approve/reject`) and for the
    reconciliation flow (its auto-approved lines) alike: decide the line (`decide`; an approved
    line stays approved) and, once it is approved, apply it (`apply_line`), in the caller's
    transaction. The outcome's status is the line's: applied, failed (with the reason),
    for_erp, rejected, or what it already was."""
    status = decide(session, line_id, approve=approve, by=by, note=note)
    if approve and status == "approved":
        return apply_line(session, line_id, reconcile_location=reconcile_location, by=by)
    return Applied(line_id, status)


_ACK = text("""
UPDATE adjustment_order_line SET status = 'acknowledged', acknowledged_at = now(), decided_by = :by
WHERE id = :line AND status = 'for_erp'
RETURNING id
""")


def acknowledge(session: Session, line_id: int, *, by: str) -> str:
    """The ERP confirmed a line sent to it (WMS truth): it is closed, and a later run that
    finds the difference again sends it again."""
    if session.execute(_ACK, {"line": line_id, "by": by}).first() is not None:
        return "acknowledged"
    line = session.execute(_STATUS, {"line": line_id}).first()
    if line is None:
        raise InvalidArgument(f"no adjustment order line {line_id}")
    if line.status != "acknowledged":
        raise InvalidArgument(
            f"line {line_id} is {line.status}: only a line sent to the ERP (for_erp) is acknowledged"
        )
    return line.status


@dataclass(frozen=True)
class AppliedLines:
    """An auto-approval round over one warehouse's approved lines (or every warehouse's)."""

    warehouse_id: int | None
    outcomes: tuple[Applied, ...]

    def counts(self) -> dict[str, int]:
        """Lines by the status they ended in (applied, failed, ...)."""
        return dict(Counter(outcome.status for outcome in self.outcomes))

    def __str__(self) -> str:
        counted = ", ".join(f"{n} {status}" for status, n in sorted(self.counts().items()))
        return f"warehouse {self.warehouse_id}: {counted or 'no lines'}"


def apply_approved(
    db: Database, run_id: int, warehouse_id: int | None, *, reconcile_location: str, by: str
) -> AppliedLines:
    """ERP truth: each approved line of one warehouse's order (or all) settled in its own
    transaction (keyed: a rerun replays), so one line that cannot apply stops no other."""
    with db.session() as session:
        lines = approved_lines(session, run_id, warehouse_id)
    outcomes = []
    for line_id in lines:
        with db.session() as session:
            outcomes.append(
                settle(session, line_id, approve=True, by=by, reconcile_location=reconcile_location)
            )
    return AppliedLines(warehouse_id, tuple(outcomes))
