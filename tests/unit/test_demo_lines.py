"""The demo's line about its reconciliation: a braked run says its lines are held and how to
release them, instead of "0 line(s) for the ERP" with the reason only in a log warning."""

from __future__ import annotations

from flows.demo import reconciliation_line

DONE = {
    "status": "done",
    "run_id": 7,
    "truth": "wms",
    "differences": 5,
    "orders": 1,
    "lines_for_erp": 5,
    "held": 0,
    "brake": "",
}


def test_an_unbraked_run_counts_its_lines_for_the_erp():
    assert reconciliation_line(DONE) == (
        "reconciliation: 5 difference(s), 1 order(s), 5 line(s) for the ERP, WMS stock unchanged"
    )


def test_a_braked_run_names_the_brake_and_the_command_that_releases_its_lines():
    braked = {**DONE, "lines_for_erp": 0, "held": 5, "brake": "5 of 12 SKUs differ (41.7%)"}
    assert reconciliation_line(braked) == (
        "reconciliation: 5 difference(s), 1 order(s), 0 line(s) for the ERP, 5 held by the brake "
        "(5 of 12 SKUs differ (41.7%)): cangflow adjustments approve --run 7 sends them, "
        "WMS stock unchanged"
    )


def test_a_stale_run_says_why():
    stale = {"status": "stale", "stale": "feed x.csv was reconciled before (run 3)"}
    assert (
        reconciliation_line(stale)
        == "reconciliation: stale, feed x.csv was reconciled before (run 3)"
    )
