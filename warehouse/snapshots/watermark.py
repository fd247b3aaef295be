"""The watermark: an instant before which every movement is committed and visible.

A movement's `recorded_at` is its transaction's start time (`now()`), and it becomes visible
only at commit, so "recorded before T" is not "visible now". The watermark is the earlier of
now and the start of the oldest transaction still open in this database: anything recorded
before it has committed (or rolled back). It is read in its own statement, before the
statements that read the ledger, so those (READ COMMITTED, a fresh snapshot each) see it all.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.errors import WarehouseError

_SAFE = text("""
SELECT least(clock_timestamp(),
             (SELECT min(a.xact_start) FROM pg_stat_activity a
              WHERE a.pid <> pg_backend_pid() AND a.datname = current_database()
                AND a.backend_type = 'client backend' AND a.xact_start IS NOT NULL)) AS safe,
       pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') AS sees_all,
       current_setting('transaction_isolation') AS isolation
""")


def safe_watermark(session: Session, *, margin_s: int) -> datetime:
    row = session.execute(_SAFE).one()
    if row.isolation != "read committed":
        # Under REPEATABLE READ the snapshot is older than the watermark read here.
        raise WarehouseError(
            f"snapshot builds need READ COMMITTED transactions, not {row.isolation}"
        )
    if row.sees_all:
        return row.safe
    # Other users' transactions show no start time to us: assume none is older than the margin.
    return row.safe - timedelta(seconds=margin_s)
