"""The SQL of snapshots. One definition of "what a snapshot holds" serves the build, the chain
check and the readers:

    snapshot(D) = every movement dated before the end of D and recorded before D's watermark

built incrementally as

    snapshot(D) = snapshot(B)                                     (B: latest built day < D)
                + movements dated in [end of B, end of D), recorded before D's watermark
                +/- movements dated before the end of B, recorded between B's watermark and D's

The last term is usually empty; it is what keeps D exact when B misses a backdated movement
(B is then dirty and rebuilt, but D does not depend on that having happened).
"""

from __future__ import annotations

from sqlalchemy import text

KEY = "warehouse_id, sku_id, balance_id, location_id, lot_id"

# Changes relative to the base snapshot, as rows of KEY + on_hand + reserved.
_INCREMENT = f"""
    SELECT {KEY}, on_hand, reserved
    FROM stock_snapshot WHERE snapshot_date = CAST(:base_day AS date)
    UNION ALL
    SELECT {KEY}, qty, reserved_qty
    FROM stock_movement
    WHERE occurred_at >= CAST(:base_end AS timestamptz) AND occurred_at < CAST(:day_end AS timestamptz)
      AND recorded_at < CAST(:watermark AS timestamptz)
    UNION ALL
    SELECT {KEY}, CAST(:sign AS bigint) * qty, CAST(:sign AS bigint) * reserved_qty
    FROM stock_movement
    WHERE occurred_at < CAST(:base_end AS timestamptz)
      AND recorded_at >= CAST(:low AS timestamptz) AND recorded_at < CAST(:high AS timestamptz)
"""

_FROM_LEDGER = f"""
    SELECT {KEY}, qty AS on_hand, reserved_qty AS reserved
    FROM stock_movement
    WHERE occurred_at < CAST(:day_end AS timestamptz) AND recorded_at < CAST(:watermark AS timestamptz)
"""


def _insert(changes: str) -> str:
    return f"""
INSERT INTO stock_snapshot (snapshot_date, {KEY}, on_hand, reserved)
SELECT CAST(:day AS date), {KEY}, sum(on_hand), sum(reserved)
FROM ({changes}) AS changes
GROUP BY {KEY}
HAVING sum(on_hand) <> 0 OR sum(reserved) <> 0
"""


INSERT_INCREMENTAL = text(_insert(_INCREMENT))
INSERT_FULL = text(_insert(_FROM_LEDGER))
DELETE_DAY = text("DELETE FROM stock_snapshot WHERE snapshot_date = CAST(:day AS date)")

BASE_DAY = text("""
SELECT snapshot_date, watermark, content_digest FROM snapshot_day
WHERE snapshot_date < CAST(:day AS date) ORDER BY snapshot_date DESC LIMIT 1
""")
THIS_DAY = text("""
SELECT d.snapshot_date, d.watermark, d.verified_at, d.content_digest,
       EXISTS (SELECT 1 FROM snapshot_dirty x WHERE x.snapshot_date = d.snapshot_date) AS dirty
FROM snapshot_day d WHERE d.snapshot_date = CAST(:day AS date)
""")
RECORD_DAY = text("""
INSERT INTO snapshot_day (snapshot_date, watermark, checked_upto, build_mode, row_count, seconds, built_at, verified_at)
VALUES (CAST(:day AS date), :watermark, :watermark, :mode, :rows, :seconds, now(), NULL)
ON CONFLICT (snapshot_date) DO UPDATE
SET watermark = excluded.watermark, checked_upto = excluded.checked_upto, build_mode = excluded.build_mode,
    row_count = excluded.row_count, seconds = excluded.seconds, built_at = excluded.built_at, verified_at = NULL,
    content_digest = NULL
""")
CLEAR_DIRTY = text("DELETE FROM snapshot_dirty WHERE snapshot_date = CAST(:day AS date)")


def _mismatches(expected: str, actual: str) -> str:
    """Keys where the two sides differ, named by their codes. Both sides are (balance_id,
    on_hand, reserved) rows; a key missing on one side counts as zero there."""
    return f"""
WITH expected AS ({expected}),
actual AS ({actual}),
diff AS (
    SELECT coalesce(e.balance_id, a.balance_id) AS balance_id,
           coalesce(e.on_hand, 0) AS expected_on_hand, coalesce(a.on_hand, 0) AS actual_on_hand,
           coalesce(e.reserved, 0) AS expected_reserved, coalesce(a.reserved, 0) AS actual_reserved
    FROM expected e FULL JOIN actual a ON a.balance_id = e.balance_id
    WHERE coalesce(e.on_hand, 0) <> coalesce(a.on_hand, 0) OR coalesce(e.reserved, 0) <> coalesce(a.reserved, 0)
)
SELECT diff.*, w.code AS warehouse, loc.code AS location, s.code AS sku, lot.code AS lot,
       count(*) OVER () AS total
FROM diff
LEFT JOIN stock_balance b ON b.id = diff.balance_id
LEFT JOIN warehouse w ON w.id = b.warehouse_id
LEFT JOIN location loc ON loc.id = b.location_id
LEFT JOIN sku s ON s.id = b.sku_id
LEFT JOIN lot ON lot.id = b.lot_id
ORDER BY diff.balance_id
LIMIT :limit
"""


_STORED = """
    SELECT balance_id, on_hand, reserved FROM stock_snapshot WHERE snapshot_date = CAST(:day AS date)
"""

CHAIN_INCREMENTAL = text(
    _mismatches(
        f"SELECT balance_id, sum(on_hand) AS on_hand, sum(reserved) AS reserved FROM ({_INCREMENT}) x GROUP BY balance_id",
        _STORED,
    )
)
CHAIN_FULL = text(
    _mismatches(
        f"SELECT balance_id, sum(on_hand) AS on_hand, sum(reserved) AS reserved FROM ({_FROM_LEDGER}) x GROUP BY balance_id",
        _STORED,
    )
)
# The latest snapshot, plus what was recorded or dated after it, against the live balances.
AGAINST_BALANCES = text(
    _mismatches(
        """
    SELECT balance_id, sum(on_hand) AS on_hand, sum(reserved) AS reserved FROM (
        SELECT balance_id, on_hand, reserved FROM stock_snapshot WHERE snapshot_date = CAST(:day AS date)
        UNION ALL
        SELECT balance_id, qty, reserved_qty FROM stock_movement WHERE occurred_at >= CAST(:day_end AS timestamptz)
        UNION ALL
        SELECT balance_id, qty, reserved_qty FROM stock_movement
        WHERE occurred_at < CAST(:day_end AS timestamptz) AND recorded_at >= CAST(:watermark AS timestamptz)
    ) x GROUP BY balance_id
    """,
        "SELECT id AS balance_id, on_hand, reserved FROM stock_balance",
    )
)
# A day's rows as one order-independent number: the sum of a 64-bit hash per row. The chain
# check records it when a day passes; a row altered, added or removed later changes it.
_ROW_HASH = "hashtextextended(balance_id || ':' || on_hand || ':' || reserved, 0)"
DAY_DIGEST = text(f"""
SELECT coalesce(sum({_ROW_HASH}), 0) FROM stock_snapshot WHERE snapshot_date = CAST(:day AS date)
""")
MARK_VERIFIED = text(f"""
UPDATE snapshot_day
SET verified_at = now(),
    content_digest = (SELECT coalesce(sum({_ROW_HASH}), 0) FROM stock_snapshot WHERE snapshot_date = CAST(:day AS date))
WHERE snapshot_date = CAST(:day AS date)
""")
# Verified days whose rows no longer match the digest taken when they passed, oldest first.
ALTERED_DAYS = text(f"""
SELECT d.snapshot_date
FROM snapshot_day d
LEFT JOIN (SELECT snapshot_date, sum({_ROW_HASH}) AS digest FROM stock_snapshot GROUP BY snapshot_date) s
       ON s.snapshot_date = d.snapshot_date
WHERE d.content_digest IS NOT NULL AND d.content_digest <> coalesce(s.digest, 0)
ORDER BY d.snapshot_date
""")
EVERY_DAY = text(
    "SELECT snapshot_date, watermark, content_digest FROM snapshot_day ORDER BY snapshot_date"
)

# Built, clean days that a movement recorded in [:from, :upto) belongs to but that did not
# include it: dated on or before the day, recorded at or after what the day was checked up to.
MARK_BACKDATED = text("""
WITH late AS (
    SELECT CAST(occurred_at AT TIME ZONE CAST(:zone AS text) AS date) AS day, max(recorded_at) AS last_recorded
    FROM stock_movement
    WHERE recorded_at >= CAST(:from AS timestamptz) AND recorded_at < CAST(:upto AS timestamptz)
    GROUP BY 1
),
hit AS (
    SELECT d.snapshot_date,
           (SELECT min(l.day) FROM late l
            WHERE l.day <= d.snapshot_date AND l.last_recorded >= d.checked_upto) AS first_day
    FROM snapshot_day d
    WHERE NOT EXISTS (SELECT 1 FROM snapshot_dirty x WHERE x.snapshot_date = d.snapshot_date)
),
marked AS (
    INSERT INTO snapshot_dirty (snapshot_date, reason)
    SELECT snapshot_date, 'a movement dated ' || first_day || ' was recorded after this snapshot was built'
    FROM hit WHERE first_day IS NOT NULL
    ON CONFLICT (snapshot_date) DO NOTHING
    RETURNING snapshot_date
),
checked AS (
    UPDATE snapshot_day d SET checked_upto = greatest(d.checked_upto, CAST(:upto AS timestamptz))
    FROM hit WHERE hit.snapshot_date = d.snapshot_date AND hit.first_day IS NULL
    RETURNING 1
)
SELECT snapshot_date FROM marked ORDER BY 1
""")
SCAN_FROM = text("""
SELECT min(d.checked_upto) FROM snapshot_day d
WHERE NOT EXISTS (SELECT 1 FROM snapshot_dirty x WHERE x.snapshot_date = d.snapshot_date)
""")
# A day and every built day after it (each builds on the one before).
MARK_DIRTY = text("""
INSERT INTO snapshot_dirty (snapshot_date, reason)
SELECT d, CAST(:reason AS text) FROM (
    SELECT CAST(:day AS date) AS d
    UNION SELECT snapshot_date FROM snapshot_day WHERE snapshot_date > CAST(:day AS date)
) AS days
ON CONFLICT (snapshot_date) DO UPDATE SET reason = excluded.reason, marked_at = now()
""")
