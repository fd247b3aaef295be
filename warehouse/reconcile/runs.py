"""Reconciliation runs: the run key, the run's record, quarantine of a rejected feed, and the
summary an admin reads.

The run key is a hash of the feed's content, its settings and the tolerance overrides. The
same feed reconciled again with the same settings finds its run: done, it creates nothing and
says so; unfinished (the process was killed), the steps are redone, each of which replaces or
skips what the earlier attempt wrote.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.reconcile.feed import FeedRejected

_TOLERANCES = text("""
SELECT coalesce(string_agg(concat_ws(':', sku_id, category, abs_qty, pct), ',' ORDER BY sku_id, category), '')
FROM reconciliation_tolerance
""")
_START = text("""
INSERT INTO reconciliation_run (run_key, feed_name, feed_sha256, truth, settings, status)
VALUES (:key, :name, :sha, :truth, CAST(:settings AS jsonb), 'loading')
ON CONFLICT (run_key) DO UPDATE SET run_key = excluded.run_key
RETURNING id, run_key, status, error, as_of, feed_rows, warehouse_ids, (xmax = 0) AS created
""")
_READ = text(
    "SELECT id, run_key, status, error, as_of, feed_rows, warehouse_ids, false AS created FROM reconciliation_run "
    "WHERE id = :run"
)
FINISHED = ("done", "rejected", "stale")


@dataclass(frozen=True)
class RunSettings:
    truth: str = "wms"
    tolerance_abs: int = 0
    tolerance_pct: float = 0.0
    auto_approve_limit: int = 0
    full_feed: bool = False
    # The blast-radius brake (`warehouse.reconcile.brake`); None: the CANGFLOW_RECONCILE_* settings.
    max_differing_pct: float | None = None
    max_delta_pct: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "truth": self.truth,
            "tolerance_abs": self.tolerance_abs,
            "tolerance_pct": self.tolerance_pct,
            "auto_approve_limit": self.auto_approve_limit,
            "full_feed": self.full_feed,
            "max_differing_pct": self.max_differing_pct,
            "max_delta_pct": self.max_delta_pct,
        }


@dataclass(frozen=True)
class Run:
    id: int
    key: str
    status: str
    created: bool
    error: str | None
    as_of: datetime | None = None
    feed_rows: int | None = None
    warehouse_ids: tuple[int, ...] = ()  # the feed's scope, once it was loaded


def run_key(session: Session, feed_sha256: str, settings: RunSettings) -> str:
    overrides = session.execute(_TOLERANCES).scalar()
    material = json.dumps(
        {"feed": feed_sha256, "settings": settings.as_json(), "tolerances": overrides},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def start(session: Session, *, feed_name: str, feed_sha256: str, settings: RunSettings) -> Run:
    """The run of this feed and these settings: new, or the one that exists."""
    key = run_key(session, feed_sha256, settings)
    row = session.execute(
        _START,
        {
            "key": key,
            "name": feed_name,
            "sha": feed_sha256,
            "truth": settings.truth,
            "settings": json.dumps(settings.as_json()),
        },
    ).one()
    return _run(row)


def read(session: Session, run_id: int) -> Run:
    """The run as it is now (another run of the same feed may have finished it meanwhile)."""
    return _run(session.execute(_READ, {"run": run_id}).one())


def _run(row) -> Run:
    return Run(
        row.id,
        row.run_key,
        row.status,
        bool(row.created),
        row.error,
        row.as_of,
        row.feed_rows,
        tuple(row.warehouse_ids or ()),
    )


@dataclass(frozen=True)
class Loaded:
    """A feed staged and checked row by row: its rows, as_of and shape, and why it is stale
    (None: it is fresh)."""

    staging: str
    rows: int
    as_of: datetime
    warehouse_ids: tuple[int, ...]
    stale: str | None = None


def mark(session: Session, run_id: int, status: str, **figures: Any) -> None:
    columns = ", ".join(f"{name} = :{name}" for name in figures)
    extra = f", {columns}" if columns else ""
    finished = ", finished_at = now()" if status in FINISHED else ""
    session.execute(
        text(f"UPDATE reconciliation_run SET status = :status{extra}{finished} WHERE id = :run"),
        {"status": status, "run": run_id, **figures},
    )


def forget_staging(session: Session, run_id: int) -> list[str]:
    """Drop every staging table of this run: this attempt's, and any an attempt that was
    killed left. The caller holds the run's lock (`exclusive`): no attempt of it is alive."""
    from warehouse.reconcile.feed import STAGING_TABLES, staging_run

    dropped = sorted(
        name
        for name in session.execute(text(STAGING_TABLES)).scalars()
        if staging_run(name) == run_id
    )
    for name in dropped:
        drop_staging(session, name)
    return dropped


def drop_staging(session: Session, staging: str) -> None:
    from warehouse.reconcile.feed import quoted, staging_run

    if staging_run(staging) is None:
        raise ValueError(f"{staging!r} is not a staging table")
    session.execute(text(f"DROP TABLE IF EXISTS {quoted(session, staging)}"))


def quarantine(path: Path, rejected: FeedRejected, folder: Path) -> Path:
    """Copy the rejected file and its report (problems named by row, column and value)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = folder / f"{stamp}-{path.name}"
    if path.is_file():
        shutil.copy2(path, target)
    report = target.with_name(target.name + ".report.txt")
    lines = [f"feed: {path}", f"rejected: {stamp} UTC", f"problems: {rejected.total}", ""]
    lines += [neutralise(str(problem)) for problem in rejected.problems]
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def neutralise(value: str) -> str:
    """A cell a spreadsheet would run as a formula, made inert."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


_SUMMARY = text("""
SELECT r.*,
       (SELECT count(*) FROM adjustment_order o WHERE o.run_id = r.id) AS orders,
       (SELECT count(*) FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
        WHERE o.run_id = r.id AND l.status = 'applied') AS applied,
       (SELECT count(*) FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
        WHERE o.run_id = r.id AND l.status = 'pending_approval') AS pending_now,
       (SELECT count(*) FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
        WHERE o.run_id = r.id AND l.status = 'failed') AS failed,
       (SELECT count(*) FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
        WHERE o.run_id = r.id AND l.status = 'held') AS held,
       (SELECT count(*) FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id
        WHERE o.run_id = r.id AND l.status = 'for_erp') AS for_erp,
       (SELECT count(*) FROM reconciliation_difference d WHERE d.run_id = r.id AND d.kind = 'not_in_feed'
        AND NOT d.within_tolerance) AS not_in_feed
FROM reconciliation_run r WHERE r.id = :run
""")
_LARGEST = text("""
SELECT w.code AS warehouse, s.code AS sku, lot.code AS lot, d.wms_qty, d.erp_qty, d.delta, d.kind, d.within_tolerance
FROM reconciliation_difference d JOIN warehouse w ON w.id = d.warehouse_id JOIN sku s ON s.id = d.sku_id
LEFT JOIN lot ON lot.id = d.lot_id
WHERE d.run_id = :run ORDER BY abs(d.delta) DESC, w.code, s.code LIMIT :limit
""")


@dataclass(frozen=True)
class Figures:
    """A run's outcome as an admin reads it: the notice, the event, the flow's summary."""

    run_id: int
    status: str
    truth: str
    feed: str
    as_of: str | None  # ISO 8601
    feed_rows: int
    differences: int
    within_tolerance: int
    not_in_feed_reported: int
    orders: int
    lines_for_erp: int
    applied: int
    pending_approval: int
    failed: int
    held: int
    brake: str  # why the blast-radius brake held the run's lines, or ""

    @property
    def beyond_tolerance(self) -> int:
        return self.differences - self.within_tolerance


@dataclass(frozen=True)
class Difference:
    """One of the largest differences of a run (ERP minus WMS), by codes."""

    warehouse: str
    sku: str
    lot: str | None
    wms_qty: int
    erp_qty: int | None  # None: not in the feed
    delta: int
    kind: str
    within_tolerance: bool


def summary(session: Session, run_id: int) -> Figures:
    row = session.execute(_SUMMARY, {"run": run_id}).mappings().one()
    return Figures(
        run_id=row["id"],
        status=row["status"],
        truth=row["truth"],
        feed=row["feed_name"],
        as_of=row["as_of"].isoformat() if row["as_of"] else None,
        feed_rows=row["feed_rows"] or 0,
        differences=row["differences"] or 0,
        within_tolerance=row["within_tolerance"] or 0,
        not_in_feed_reported=row["not_in_feed"],
        orders=row["orders"],
        lines_for_erp=row["for_erp"],
        applied=row["applied"],
        pending_approval=row["pending_now"],
        failed=row["failed"],
        held=row["held"],
        brake=row["brake"] or "",
    )


def largest(session: Session, run_id: int, limit: int = 10) -> list[Difference]:
    rows = session.execute(_LARGEST, {"run": run_id, "limit": limit}).mappings()
    return [Difference(**row) for row in rows]
