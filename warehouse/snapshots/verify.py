"""The chain check: each built day equals its base plus the movements between (recomputed from
the ledger now, against the rows stored), and the latest day plus everything after it equals
the live balances. A failed check names the keys.

The same formula over the same base cannot see a base that is itself wrong: a base row altered
after its day passed would be carried into every day built on it. So each check also compares
the base's rows with the digest taken when the base passed (`content_digest`); a base that no
longer matches makes the check fail with `wrong_from` at the base, the oldest day to rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.history.calendar import day_end
from warehouse.snapshots import locks, statements
from warehouse.snapshots.build import increment_params

SHOWN = 20


# What each side of a check is, as the messages name them: (the "expected" side, the "actual").
CHAIN_SIDES = ("recomputed from its base and the ledger", "stored snapshot")
LATEST_SIDES = ("snapshot plus later movements", "live balance")


@dataclass(frozen=True)
class Mismatch:
    warehouse: str | None
    location: str | None
    sku: str | None
    lot: str | None
    balance_id: int
    expected_on_hand: int
    actual_on_hand: int
    expected_reserved: int
    actual_reserved: int
    sides: tuple[str, str] = CHAIN_SIDES

    def __str__(self) -> str:
        lot = f" lot {self.lot}" if self.lot else ""
        computed, stored = self.sides
        return (
            f"{self.warehouse}/{self.location}/{self.sku}{lot} (balance {self.balance_id}): "
            f"{stored} on_hand {self.actual_on_hand}, reserved {self.actual_reserved}; "
            f"{computed} on_hand {self.expected_on_hand}, reserved {self.expected_reserved}"
        )


@dataclass(frozen=True)
class CheckResult:
    what: str
    day: date | None
    mismatches: tuple[Mismatch, ...]
    total: int
    # A day whose stored rows no longer match what was verified (the base, or the day itself).
    altered: date | None = None

    @property
    def ok(self) -> bool:
        return self.total == 0 and self.altered is None

    @property
    def wrong_from(self) -> date | None:
        """The oldest day that can be wrong: an altered day, else the day checked."""
        if self.ok:
            return None
        return self.altered if self.altered is not None else self.day

    def __str__(self) -> str:
        if self.ok:
            return f"{self.what} {self.day}: ok"
        parts = []
        if self.altered is not None:
            parts.append(
                f"the snapshot of {self.altered} was altered after it was verified "
                "(its rows no longer match their digest)"
            )
        if self.total:
            shown = "; ".join(str(m) for m in self.mismatches)
            more = (
                f" (and {self.total - len(self.mismatches)} more)"
                if self.total > len(self.mismatches)
                else ""
            )
            parts.append(f"{self.total} key(s) differ: {shown}{more}")
        return f"{self.what} {self.day}: " + "; ".join(parts)


def _result(
    what: str,
    day: date | None,
    rows,
    sides: tuple[str, str] = CHAIN_SIDES,
    altered: date | None = None,
) -> CheckResult:
    rows = list(rows)
    mismatches = tuple(
        Mismatch(
            r.warehouse,
            r.location,
            r.sku,
            r.lot,
            r.balance_id,
            r.expected_on_hand,
            r.actual_on_hand,
            r.expected_reserved,
            r.actual_reserved,
            sides,
        )
        for r in rows
    )
    return CheckResult(what, day, mismatches, rows[0].total if rows else 0, altered)


def is_altered(session: Session, day: date, recorded_digest) -> bool:
    """The day's rows differ from those its chain check passed (unknown for a day never verified)."""
    if recorded_digest is None:
        return False
    return session.execute(statements.DAY_DIGEST, {"day": day}).scalar_one() != recorded_digest


def verify_day(
    session: Session, day: date, *, mark_verified: bool = True, check_base: bool = True
) -> CheckResult:
    """snapshot(day) == snapshot(base) + movements between, key by key, over a base whose rows
    are those it was verified with; marks the day verified (and records its digest)."""
    session.execute(text("SELECT set_config('plan_cache_mode', 'auto', true)"))  # see build_day
    locks.one_day(session, day)
    this = session.execute(statements.THIS_DAY, {"day": day}).first()
    if this is None:
        raise LookupError(f"no snapshot was built for {day}")
    base = session.execute(statements.BASE_DAY, {"day": day}).first()
    if base is None:
        params = {"day": day, "day_end": day_end(day), "watermark": this.watermark}
        rows = session.execute(statements.CHAIN_FULL, {**params, "limit": SHOWN})
    else:
        rows = session.execute(
            statements.CHAIN_INCREMENTAL,
            {**increment_params(day, this.watermark, base), "limit": SHOWN},
        )
    # (The chain audit compares every day's digest in one statement first, so it skips this.)
    altered: date | None = None
    if (
        check_base
        and base is not None
        and is_altered(session, base.snapshot_date, base.content_digest)
    ):
        altered = base.snapshot_date
    result = _result("chain check", day, rows, altered=altered)
    if result.ok and mark_verified:
        session.execute(statements.MARK_VERIFIED, {"day": day})
    return result


def verify_latest(session: Session) -> CheckResult | None:
    """The latest snapshot plus later-dated and later-recorded movements == stock_balance."""
    latest = session.execute(statements.BASE_DAY, {"day": date.max}).first()
    if latest is None:
        return None
    locks.one_day(session, latest.snapshot_date)
    latest = session.execute(statements.THIS_DAY, {"day": latest.snapshot_date}).first()
    # The day's row was just read, and only retention deletes such rows (of months past it).
    assert latest is not None
    day = latest.snapshot_date
    params = {"day": day, "day_end": day_end(day), "watermark": latest.watermark, "limit": SHOWN}
    altered = day if is_altered(session, day, latest.content_digest) else None
    return _result(
        "latest snapshot against balances",
        day,
        session.execute(statements.AGAINST_BALANCES, params),
        LATEST_SIDES,
        altered,
    )
