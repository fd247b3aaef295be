"""The chain check: each built day equals its base plus the movements between (recomputed from
the ledger now, against the rows stored), and the latest day plus everything after it equals
the live balances. A failed check names the keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import text
from sqlalchemy.orm import Session

from . import locks, statements
from .build import increment_params
from ..calendar import day_end

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
        return (f"{self.warehouse}/{self.location}/{self.sku}{lot} (balance {self.balance_id}): "
                f"{stored} on_hand {self.actual_on_hand}, reserved {self.actual_reserved}; "
                f"{computed} on_hand {self.expected_on_hand}, reserved {self.expected_reserved}")


@dataclass(frozen=True)
class CheckResult:
    what: str
    day: date | None
    mismatches: tuple[Mismatch, ...]
    total: int

    @property
    def ok(self) -> bool:
        return self.total == 0

    def __str__(self) -> str:
        if self.ok:
            return f"{self.what} {self.day}: ok"
        shown = "; ".join(str(m) for m in self.mismatches)
        more = f" (and {self.total - len(self.mismatches)} more)" if self.total > len(self.mismatches) else ""
        return f"{self.what} {self.day}: {self.total} key(s) differ: {shown}{more}"


def _result(what: str, day: date | None, rows, sides: tuple[str, str] = CHAIN_SIDES) -> CheckResult:
    rows = list(rows)
    mismatches = tuple(
        Mismatch(r.warehouse, r.location, r.sku, r.lot, r.balance_id, r.expected_on_hand, r.actual_on_hand,
                 r.expected_reserved, r.actual_reserved, sides)
        for r in rows
    )
    return CheckResult(what, day, mismatches, rows[0].total if rows else 0)


def verify_day(session: Session, day: date) -> CheckResult:
    """snapshot(day) == snapshot(base) + movements between, key by key; marks the day verified."""
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
        rows = session.execute(statements.CHAIN_INCREMENTAL, {**increment_params(day, this.watermark, base), "limit": SHOWN})
    result = _result("chain check", day, rows)
    if result.ok:
        session.execute(statements.MARK_VERIFIED, {"day": day})
    return result


def verify_latest(session: Session) -> CheckResult | None:
    """The latest snapshot plus later-dated and later-recorded movements == stock_balance."""
    latest = session.execute(statements.BASE_DAY, {"day": date.max}).first()
    if latest is None:
        return None
    locks.one_day(session, latest.snapshot_date)
    latest = session.execute(statements.THIS_DAY, {"day": latest.snapshot_date}).first()
    day = latest.snapshot_date
    params = {"day": day, "day_end": day_end(day), "watermark": latest.watermark, "limit": SHOWN}
    return _result("latest snapshot against balances", day, session.execute(statements.AGAINST_BALANCES, params),
                   LATEST_SIDES)
