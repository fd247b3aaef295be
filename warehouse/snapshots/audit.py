"""The full chain audit: every retained snapshot day proven from an independent start.

The nightly checks each new day against its base, and the latest day against the balances.
Neither can tell which older day is wrong when the latest check fails (a wrong base carries its
error into every day built on it), and neither looks at days nobody rebuilds. The audit does:

- every verified day's rows against the digest taken when it passed (a row altered by hand);
- the first retained day against the ledger (when nothing was retired) and then each day
  against the day before it plus the movements between, in date order, up to the first failure.

The oldest day found wrong is where a repair starts: it and every later day are marked dirty,
so the next snapshot run rebuilds them from a day that is right, and the chain is green after
that one run. A wrong day the database cannot rebuild (one whose ledger is retired: the opening
balance or older) is reported with what the operator has to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.orm import Session

from warehouse.snapshots import locks, statements
from warehouse.snapshots.backdated import mark_dirty
from warehouse.snapshots.history_floor import first_retained_day
from warehouse.snapshots.verify import verify_day


@dataclass(frozen=True)
class ChainAudit:
    days_checked: int
    findings: tuple[str, ...]
    oldest_wrong: date | None  # the first day a rebuild must start from
    unrepairable: str | None = None  # set when the wrong day's ledger is retired

    @property
    def ok(self) -> bool:
        return not self.findings

    def __str__(self) -> str:
        if self.ok:
            return f"snapshot chain: {self.days_checked} day(s) checked, ok"
        what = "; ".join(self.findings)
        if self.unrepairable:
            return f"snapshot chain: {what}. {self.unrepairable}"
        return f"snapshot chain: {what}. Rebuilding from {self.oldest_wrong}"


def audit_chain(session: Session) -> ChainAudit:
    """Check every retained day (read-only); see the module docstring. Runs alone: builds and
    the backdate scan wait until it ends."""
    locks.scan_exclusive(session)
    floor = first_retained_day(session)
    opening = floor - timedelta(days=1) if floor is not None else None
    findings: list[str] = []
    altered = list(session.execute(statements.ALTERED_DAYS).scalars())
    for day in altered:
        findings.append(f"the snapshot of {day} was altered after it was verified")
    beyond_repair = [day for day in altered if opening is not None and day <= opening]
    if beyond_repair:
        assert floor is not None  # days beyond repair need an opening day, which needs a floor
        return ChainAudit(0, tuple(findings), None, _restore_hint(beyond_repair, floor))
    days = [
        row.snapshot_date
        for row in session.execute(statements.EVERY_DAY)
        if opening is None or row.snapshot_date > opening
    ]
    oldest_wrong = altered[0] if altered else None
    checked = 0
    for day in days:
        if oldest_wrong is not None and day >= oldest_wrong:
            break
        checked += 1
        result = verify_day(session, day, mark_verified=False, check_base=False)
        if not result.ok:
            findings.append(str(result))
            oldest_wrong = result.wrong_from
            break
    return ChainAudit(checked, tuple(findings), oldest_wrong)


def repair(session: Session, audit: ChainAudit) -> date | None:
    """Mark the audit's oldest wrong day and every later day dirty; the day marked, if any."""
    if audit.oldest_wrong is None:
        return None
    mark_dirty(session, audit.oldest_wrong, f"chain audit: {'; '.join(audit.findings)}"[:1000])
    return audit.oldest_wrong


@dataclass(frozen=True)
class ChainRepair:
    """An audit after the latest snapshot disagreed with the live balances, and what it did."""

    audit: ChainAudit
    marked_from: date | None  # the day marked dirty, from which the next run rebuilds

    def next_step(self) -> str:
        """What the run's failure tells a person to expect or do."""
        if self.marked_from is not None:
            return f"{self.audit}: days from {self.marked_from} are marked dirty for the next run"
        if self.audit.unrepairable:
            return str(self.audit)
        # Every day agrees with the ledger: the live balances are what differs from it.
        return (
            "every snapshot day agrees with the ledger, so the live balances differ from it; "
            "no rebuild changes that: run `cangflow check` to see which"
        )


def audit_and_repair(session: Session) -> ChainRepair:
    """Rebuilding the newest days cannot fix a wrong older day they were built on: prove every
    retained day and mark dirty from the oldest wrong one (when its ledger is still kept)."""
    audit = audit_chain(session)
    marked = repair(session, audit) if audit.unrepairable is None else None
    return ChainRepair(audit, marked)


def _restore_hint(days: list[date], floor: date) -> str:
    shown = ", ".join(str(d) for d in days[:5]) + (" ..." if len(days) > 5 else "")
    return (
        f"The ledger before {floor} is retired, so {shown} cannot be rebuilt from this database: "
        f"restore those days' stock_snapshot rows from a backup, then run `cangflow check --full` again"
    )
