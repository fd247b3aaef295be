"""Checking the books: do the stock numbers add up? Two depths, one record.

- **Full**: every retained snapshot day proven from an independent start (`snapshots.audit`),
  the whole ledger (with its opening balance) against the balances, every movement's outbox
  message and key. A wrong snapshot day is marked dirty from the oldest wrong one, so the next
  snapshot run repairs the chain.
- **Incremental**: what can have gone wrong since the last passing check. The latest snapshot
  plus the movements after it against the balances, and the movement checks over the movements
  recorded since that check (the recorded_at index); nothing reads the whole ledger.

Each check is recorded in `books_check` with the instant it covers up to (a watermark: every
movement recorded before it had committed), so the next incremental check starts exactly there.
The nightly's gate runs incremental checks, and a full one when none passed for
`CANGFLOW_FULL_CHECK_DAYS` by the jobs' clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse import invariants
from warehouse.history import calendar
from warehouse.settings import get_settings
from warehouse.snapshots.audit import ChainAudit, audit_chain, repair
from warehouse.snapshots.verify import verify_latest
from warehouse.snapshots.watermark import safe_watermark

_LAST_PASSING = text("SELECT covered_upto FROM books_check WHERE ok ORDER BY id DESC LIMIT 1")
_LAST_FULL = text("SELECT max(business_time) FROM books_check WHERE kind = 'full' AND ok")
_RECORD = text("""
INSERT INTO books_check (kind, business_time, covered_upto, ok, summary)
VALUES (:kind, :business_time, :covered_upto, :ok, :summary)
""")


@dataclass(frozen=True)
class BooksCheck:
    kind: str  # "full" or "incremental"
    violations: tuple[invariants.Violation, ...]
    chain: ChainAudit | None = None
    repair_from: date | None = None  # the snapshot days from here on were marked for a rebuild
    since: datetime | None = None  # an incremental check's start

    @property
    def ok(self) -> bool:
        return not self.violations and (self.chain is None or self.chain.ok)

    def lines(self) -> list[str]:
        lines = [str(v) for v in self.violations]
        if self.chain is not None and not self.chain.ok:
            lines.append(str(self.chain))
        return lines

    def summary(self) -> str:
        if self.kind == "full":
            scope = "full"
        else:
            assert self.since is not None  # an incremental check records its start
            scope = f"incremental since {self.since.isoformat()}"
        if self.ok:
            checked = (
                f", {self.chain.days_checked} snapshot day(s) proven"
                if self.chain is not None
                else ""
            )
            return f"books check ({scope}): ok{checked}"
        what = f"{len(self.violations)} invariant violation(s)"
        if self.chain is not None and not self.chain.ok:
            what += ", the snapshot chain is wrong"
        then = (
            f"; snapshot days from {self.repair_from} are marked for a rebuild: run `cangflow run snapshot`"
            if self.repair_from is not None
            else ""
        )
        return f"books check ({scope}): {what}{then}"


def full_check_due(session: Session, *, now: datetime | None = None) -> bool:
    last = session.execute(_LAST_FULL).scalar()
    now = now or calendar.now()
    return last is None or now - last >= timedelta(days=get_settings().full_check_days)


def check_books(
    session: Session, *, full: bool | None = None, limit_per_check: int = 100
) -> BooksCheck:
    """Check the books (full, incremental, or None: whichever is due) and record the check. The
    caller commits (the record, and the dirty marks of a repair)."""
    covered_upto = safe_watermark(session, margin_s=get_settings().snapshot_visibility_margin_s)
    since = session.execute(_LAST_PASSING).scalar()
    if full is None:
        full = since is None or full_check_due(session)
    if not full and since is None:
        full = True  # nothing passed yet: there is no start to check from
    result: BooksCheck | None
    if full:
        result = _full(session, limit_per_check)
    else:
        assert since is not None  # else `full` was set just above
        result = _incremental(session, since, limit_per_check)
        if result is None:  # no snapshot yet: the ledger is the only start
            result = _full(session, limit_per_check)
    session.execute(
        _RECORD,
        {
            "kind": result.kind,
            "business_time": calendar.now(),
            "covered_upto": covered_upto,
            "ok": result.ok,
            "summary": result.summary()[:4000],
        },
    )
    return result


def _full(session: Session, limit: int) -> BooksCheck:
    chain = audit_chain(session)
    repaired = repair(session, chain) if chain.unrepairable is None else None
    return BooksCheck(
        "full", tuple(invariants.check(session, limit_per_check=limit)), chain, repaired
    )


def _incremental(session: Session, since: datetime, limit: int) -> BooksCheck | None:
    latest = verify_latest(session)
    if latest is None:
        return None
    violations = invariants.check(session, limit_per_check=limit, since=since)
    if latest.ok:
        return BooksCheck("incremental", tuple(violations), since=since)
    violations.append(invariants.Violation("balance_equals_snapshot_and_ledger", str(latest)))
    # Which side is wrong? The audit proves the snapshot chain (and marks where to rebuild from).
    chain = audit_chain(session)
    repaired = repair(session, chain) if chain.unrepairable is None else None
    return BooksCheck("incremental", tuple(violations), chain, repaired, since)
