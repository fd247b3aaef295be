"""Closed history: a month whose ledger (and snapshot) partitions refuse every change in the
database itself, with row triggers on the partitions. A row trigger on a partition fires for
rows routed through the parent as well, which REVOKE and statement triggers do not catch.

A month closes once its last day is past the grace period and a verified, clean snapshot of
that day holds every movement of the month. Reopening is on purpose, with a reason, and
audited; the next rollover closes the month again once its snapshots are rebuilt.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import date, timedelta

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.errors import InvalidArgument, WarehouseError
from warehouse.history import partitions
from warehouse.history.partitions import add_months, month_label, month_start, partition_name

ROW_TRIGGER = "cangflow_history_closed"
TRUNCATE_TRIGGER = "cangflow_history_closed_truncate"


class NotClosable(WarehouseError):
    def __init__(self, month: date, why: str):
        self.month = month
        self.why = why
        super().__init__(f"history {month_label(month)} stays open: {why}")


@dataclass(frozen=True)
class Closing:
    """What the rollover did with one month due to close."""

    month: date
    closed: bool
    partitions: tuple[str, ...] = ()  # the partitions made read-only
    why: str = ""  # left open: the reason (NotClosable.why)

    @property
    def label(self) -> str:
        return month_label(self.month)


def parse_month(value: str) -> date:
    """'YYYY-MM' as the first day of that month."""
    try:
        year, month = value.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError
        return date(int(year), int(month), 1)
    except ValueError:
        raise InvalidArgument(f"month {value!r} is not of the form YYYY-MM") from None


def last_day(month: date) -> date:
    return add_months(month_start(month), 1) - timedelta(days=1)


_TRIGGERED = text("""
SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE t.tgname = :name AND c.relnamespace = 'public'::regnamespace
""")


def _triggered(session: Session) -> set[str]:
    return set(session.execute(_TRIGGERED, {"name": ROW_TRIGGER}).scalars())


def _month_partitions(
    session: Session, month: date, existing: dict[str, set[str]] | None = None
) -> list[str]:
    """This month's partitions that exist, ledger first (`existing`: the names per table, when
    the caller has read them already)."""
    existing = existing or _existing(session)
    return [
        partition_name(table, month)
        for table in partitions.PARTITIONED_TABLES
        if partition_name(table, month) in existing[table]
    ]


def _existing(session: Session) -> dict[str, set[str]]:
    return {table: partitions.existing(session, table) for table in partitions.PARTITIONED_TABLES}


def closed_months(session: Session) -> list[date]:
    """Months whose ledger partition refuses changes."""
    triggered = _triggered(session)
    return [
        p.month
        for p in partitions.attached(session, "stock_movement")
        if p.month is not None and p.name in triggered
    ]


def due_months(session: Session, *, today: date, grace_days: int) -> list[date]:
    """Months past their grace period whose partitions are not all closed (never closed yet,
    reopened, or with snapshots reopened by an earlier month's reopening)."""
    triggered = _triggered(session)
    existing = _existing(session)
    cutoff = today - timedelta(days=grace_days)
    due = []
    for p in partitions.attached(session, "stock_movement"):
        if p.month is None or last_day(p.month) >= cutoff:
            continue
        if any(name not in triggered for name in _month_partitions(session, p.month, existing)):
            due.append(p.month)
    return due


_LAST_DAY_STATE = text("""
SELECT d.watermark, d.verified_at, EXISTS (SELECT 1 FROM snapshot_dirty x WHERE x.snapshot_date = d.snapshot_date) AS dirty,
       EXISTS (SELECT 1 FROM snapshot_dirty x WHERE x.snapshot_date <= d.snapshot_date) AS earlier_dirty
FROM snapshot_day d WHERE d.snapshot_date = :day
""")


def _late_movements(session: Session, month: date, watermark) -> int:
    """Movements of the month recorded at or after the watermark (not in the snapshot); with
    no watermark, all of the month's movements."""
    raw = raw_sql.driver(session)
    query = sql.SQL("SELECT count(*) FROM {} WHERE recorded_at >= {}").format(
        sql.Identifier(partition_name("stock_movement", month)),
        sql.Literal(watermark or "-infinity"),
    )
    return session.connection().exec_driver_sql(query.as_string(raw)).scalar_one()  # count(*)


_VERIFIED_AFTER = text(
    "SELECT EXISTS (SELECT 1 FROM snapshot_day WHERE snapshot_date > :day AND verified_at IS NOT NULL)"
)


def why_not_closable(session: Session, month: date) -> str | None:
    day = last_day(month)
    state = session.execute(_LAST_DAY_STATE, {"day": day}).first()
    if state is None:
        # A month before the first snapshot day holds no movement (the snapshots begin on the
        # day of the oldest one); it can close once snapshots exist after it (the lock taken by
        # closing keeps it empty).
        if (
            session.execute(_VERIFIED_AFTER, {"day": day}).scalar()
            and _late_movements(session, month, None) == 0
        ):
            return None
        return f"no snapshot of its last day {day} yet"
    if state.dirty or state.earlier_dirty:
        return f"the snapshot of {day} (or an earlier one) is dirty and waits for a rebuild"
    if state.verified_at is None:
        return f"the snapshot of {day} has not passed its chain check"
    late = _late_movements(session, month, state.watermark)
    if late:
        return f"{late} movement(s) were recorded after the snapshot of {day} was built"
    return None


def record_state(
    session: Session, month: date, state: str, action: str, reason: str | None
) -> None:
    session.execute(
        text(
            "INSERT INTO history_month (month, state) VALUES (:month, :state) "
            "ON CONFLICT (month) DO UPDATE SET state = excluded.state, changed_at = now()"
        ),
        {"month": month, "state": state},
    )
    session.execute(
        text(
            "INSERT INTO history_audit (month, action, reason, actor) VALUES (:month, :action, :reason, :actor)"
        ),
        {"month": month, "action": action, "reason": reason, "actor": _actor(session)},
    )


def _actor(session: Session) -> str:
    user = session.execute(text("SELECT current_user")).scalar()
    try:
        person = getpass.getuser()
    except Exception:  # no login name in some containers
        person = "unknown"
    return f"{person} as {user}"


def close_month(session: Session, month: date, *, lock_timeout_ms: int | None = None) -> list[str]:
    """Make the month's partitions refuse changes; the partitions newly closed. Raises
    NotClosable (the caller rolls back) when the snapshots do not yet hold the whole month."""
    month = month_start(month)
    partitions.rollover_lock(session)
    partitions.set_lock_timeout(session, lock_timeout_ms)
    why = why_not_closable(session, month)
    if why:
        raise NotClosable(month, why)
    triggered = _triggered(session)
    newly = []
    label = sql.Literal(month_label(month))
    for name in _month_partitions(session, month):
        if name in triggered:
            continue
        target = sql.Identifier(name)
        # Creating the trigger waits for writers in flight on the partition; after it, none can start.
        partitions.execute_ddl(
            session,
            sql.SQL(
                "CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE OR DELETE ON {target} "
                "FOR EACH ROW EXECUTE FUNCTION cangflow_refuse_closed_history({label})"
            ).format(trigger=sql.Identifier(ROW_TRIGGER), target=target, label=label),
        )
        partitions.execute_ddl(
            session,
            sql.SQL(
                "CREATE TRIGGER {trigger} BEFORE TRUNCATE ON {target} "
                "FOR EACH STATEMENT EXECUTE FUNCTION cangflow_refuse_closed_history({label})"
            ).format(trigger=sql.Identifier(TRUNCATE_TRIGGER), target=target, label=label),
        )
        newly.append(name)
    # Checked again under the lock: a writer that committed while we waited is seen now.
    why = why_not_closable(session, month)
    if why:
        raise NotClosable(month, why)
    if newly:
        record_state(
            session, month, "closed", "closed", "rollover: past the grace period, snapshot verified"
        )
    return newly


def reopen_month(
    session: Session, month: date, *, reason: str, lock_timeout_ms: int | None = None
) -> list[str]:
    """Let the month's ledger take changes again (and the snapshots from it onward be rebuilt)."""
    if not reason or not reason.strip():
        raise InvalidArgument('reopening history needs a reason (--reason "...")')
    month = month_start(month)
    partitions.rollover_lock(session)
    if partition_name("stock_movement", month) not in partitions.existing(
        session, "stock_movement"
    ):
        raise InvalidArgument(
            f"no ledger partition for {month_label(month)} (never made, or archived)"
        )
    partitions.set_lock_timeout(session, lock_timeout_ms)
    triggered = _triggered(session)
    # A change in this month can make any later snapshot stale, so later months' snapshot
    # partitions open too; their ledgers stay closed.
    later_snapshots = [
        p.name
        for p in partitions.attached(session, "stock_snapshot")
        if p.month is not None and p.month > month
    ]
    names = [n for n in _month_partitions(session, month) + later_snapshots if n in triggered]
    if partition_name("stock_movement", month) not in triggered:
        raise InvalidArgument(f"history {month_label(month)} is not closed")
    for name in names:
        for trigger in (ROW_TRIGGER, TRUNCATE_TRIGGER):
            partitions.execute_ddl(
                session,
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(trigger), sql.Identifier(name)
                ),
            )
    record_state(session, month, "reopened", "reopened", reason.strip())
    return names


def reopened_months(session: Session) -> list[date]:
    return list(
        session.execute(
            text("SELECT month FROM history_month WHERE state = 'reopened' ORDER BY month")
        ).scalars()
    )


_AUDIT = text(
    "SELECT month, action, reason, actor, at FROM history_audit ORDER BY at DESC LIMIT :limit"
)


def audit_trail(session: Session, *, limit: int = 20) -> list:
    """The newest openings and closings of months, newest first (month, action, reason, actor, at)."""
    return list(session.execute(_AUDIT, {"limit": limit}).all())
