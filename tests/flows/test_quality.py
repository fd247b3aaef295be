"""The data-quality suites (expectations/, run by GX in the database) pass on sound data, fail
naming the expectation and sample values on bad data, and a failing suite stops the flow."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tasks.quality import QualityGateFailed, run_suite
from tests.builders import World
from warehouse import quality

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tasks_db, prefect_api):
    world = World.create(tasks_db, bins=1)
    world.stocked_sku(5)
    return world


def test_sound_balances_pass_every_expectation(world, tasks_db):
    result = quality.validate(tasks_db, "stock_balance")
    assert result.success and len(result.rows) == 4


def test_a_bad_snapshot_fails_naming_the_expectation_and_sample_values(world, tasks_db):
    day = "2001-01-01"  # a day of its own, removed again below
    with tasks_db.session() as s:
        s.execute(text("""
            INSERT INTO stock_snapshot (snapshot_date, warehouse_id, sku_id, balance_id, location_id, on_hand, reserved)
            SELECT DATE '2001-01-01', warehouse_id, sku_id, id, location_id, -3, 0 FROM stock_balance LIMIT 1"""))
    try:
        result = quality.validate(tasks_db, "stock_snapshot", day=day)
    finally:
        with tasks_db.session() as s:
            s.execute(text("DELETE FROM stock_snapshot WHERE snapshot_date = DATE '2001-01-01'"))
    assert not result.success
    failed = {row["expectation"]: row for row in result.failures}
    assert "expect_column_values_to_be_between" in failed
    assert -3 in failed["expect_column_values_to_be_between"]["sample"]
    assert "-3" in str(result)


def test_the_suite_task_fails_the_run_and_leaves_its_table(world, tasks_db, monkeypatch):
    from tests.flows.test_snapshot_flows import artifact_rows

    assert run_suite("stock_balance")["expectations"] == 4
    assert len(artifact_rows("quality-stock-balance")) == 4
    bad = quality.QualityResult("stock_balance", False, [{"expectation": "x", "arguments": {}, "success": False,
                                                          "unexpected": 1, "sample": [[-1]]}])
    monkeypatch.setattr(quality, "validate", lambda db, suite, **context: bad)
    with pytest.raises(QualityGateFailed, match="1 of 1 expectation"):
        run_suite("stock_balance")
