"""The nightly parent flow runs every step as a subflow, and a failed quality gate stops the
steps that would apply data (the reconciliation) and fails the run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from flows.nightly import nightly_flow
from tasks.quality import QualityGateFailed
from tests.builders import World

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tasks_db, prefect_api):
    world = World.create(tasks_db, bins=1)
    for qty in (4, 5):
        world.stocked_sku(qty)
    return world


def _feed(folder, world, quantities) -> None:
    as_of = datetime.now(UTC).isoformat()
    lines = [
        f"{world.warehouse},{sku},,{qty},{as_of}"
        for sku, qty in zip(world.skus, quantities, strict=True)
    ]
    (folder / "erp.csv").write_text("warehouse,sku,lot,quantity,as_of\n" + "\n".join(lines) + "\n")


def _runs(db) -> int:
    with db.session() as s:
        return s.execute(text("SELECT count(*) FROM reconciliation_run")).scalar()


def test_nightly_runs_snapshot_rollover_reconcile_and_warmup(world, tasks_db, tmp_path):
    _feed(tmp_path, world, [4, 6])
    summary = nightly_flow(feed_dir=str(tmp_path))
    assert set(summary) == {"snapshot", "books", "rollover", "reconcile", "warmup"}
    assert summary["books"]["ok"] and summary["books"]["kind"] in ("full", "incremental")
    assert summary["snapshot"]["ok"] and summary["reconcile"]["differences"] == 1
    # The next night the ERP sent nothing new: the reconcile step is stale, and the nightly goes on.
    again = nightly_flow(feed_dir=str(tmp_path))
    assert (
        again["reconcile"]["status"] == "stale"
        and "reconciled before" in again["reconcile"]["stale"]
    )
    assert again["warmup"] and again["snapshot"]["ok"]


def test_a_failed_quality_gate_stops_the_reconciliation_and_fails_the_run(
    world, tasks_db, tmp_path
):
    _feed(tmp_path, world, [4, 7])
    with tasks_db.session() as s:  # books that no longer add up: a balance off its ledger
        s.execute(
            text(
                "UPDATE stock_balance SET on_hand = on_hand + 1 WHERE sku_id = (SELECT id FROM sku WHERE code = :sku)"
            ),
            {"sku": world.skus[0]},
        )
    before = _runs(tasks_db)
    try:
        with pytest.raises(Exception) as failed:
            nightly_flow(feed_dir=str(tmp_path))
        assert (
            isinstance(failed.value, QualityGateFailed)
            or "invariant" in str(failed.value)
            or "check" in str(failed.value)
        )
        assert _runs(tasks_db) == before  # nothing was reconciled on broken books
    finally:
        with tasks_db.session() as s:
            s.execute(
                text(
                    "UPDATE stock_balance SET on_hand = on_hand - 1 WHERE sku_id = (SELECT id FROM sku WHERE code = :sku)"
                ),
                {"sku": world.skus[0]},
            )
