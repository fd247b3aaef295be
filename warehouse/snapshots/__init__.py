"""Daily stock snapshots: build, verify, find what backdated movements made stale, read."""

from warehouse.snapshots.audit import ChainAudit, ChainRepair, audit_and_repair, audit_chain, repair
from warehouse.snapshots.backdated import mark_backdated, mark_dirty
from warehouse.snapshots.build import DayBuilt, build_day
from warehouse.snapshots.checked import DayOutcome, SnapshotCheckFailed, build_checked_day
from warehouse.snapshots.plan import SnapshotPlan, plan_run
from warehouse.snapshots.read import on_hand_as_of
from warehouse.snapshots.verify import CheckResult, Mismatch, verify_day, verify_latest

__all__ = [
    "ChainAudit",
    "ChainRepair",
    "CheckResult",
    "DayBuilt",
    "DayOutcome",
    "Mismatch",
    "SnapshotCheckFailed",
    "SnapshotPlan",
    "audit_and_repair",
    "audit_chain",
    "build_checked_day",
    "build_day",
    "mark_backdated",
    "mark_dirty",
    "on_hand_as_of",
    "plan_run",
    "repair",
    "verify_day",
    "verify_latest",
]
