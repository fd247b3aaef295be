"""The data-quality suites (expectations/, as SQL or by GX in the database) pass on sound data, fail
naming the expectation and sample values on bad data, and a failing suite stops the flow."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tasks.quality import QualityGateFailed, run_suite
from tests.builders import World
from warehouse.db.roles import STAGING_SCHEMA
from warehouse.quality import suites as quality

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tasks_db, prefect_api):
    world = World.create(tasks_db, bins=1)
    world.stocked_sku(5)
    return world


def test_sound_balances_pass_every_expectation(world, tasks_db):
    result = quality.validate(tasks_db, "stock_balance")
    assert result.success and len(result.rows) == 4


def test_a_bad_snapshot_fails_naming_the_expectation_and_sample_values(
    world, tasks_db, monkeypatch
):
    day = "2001-01-01"  # a day of its own, removed again below
    with tasks_db.session() as s:
        s.execute(
            text("""
            INSERT INTO stock_snapshot (snapshot_date, warehouse_id, sku_id, balance_id, location_id, on_hand, reserved)
            SELECT DATE '2001-01-01', warehouse_id, sku_id, id, location_id, -3, 0 FROM stock_balance LIMIT 1""")
        )
    try:
        result = quality.validate(tasks_db, "stock_snapshot", day=day)
        as_sql, by_gx = _both_engines(tasks_db, "stock_snapshot", monkeypatch, day=day)
    finally:
        with tasks_db.session() as s:
            s.execute(text("DELETE FROM stock_snapshot WHERE snapshot_date = DATE '2001-01-01'"))
    assert not result.success
    failed = {row["expectation"]: row for row in result.failures}
    assert "expect_column_values_to_be_between" in failed
    assert -3 in failed["expect_column_values_to_be_between"]["sample"]
    assert "-3" in str(result)
    assert as_sql == by_gx  # the suite runs as SQL; Great Expectations answers the same


def test_the_suite_task_fails_the_run_and_leaves_its_table(world, tasks_db, monkeypatch):
    from tests.flows.test_snapshot_flows import artifact_rows

    assert len(run_suite("stock_balance").rows) == 4
    assert len(artifact_rows("quality-stock-balance")) == 4
    bad = quality.QualityResult(
        "stock_balance",
        False,
        [
            {
                "expectation": "x",
                "arguments": {},
                "success": False,
                "unexpected": 1,
                "sample": [[-1]],
            }
        ],
    )
    monkeypatch.setattr(quality, "validate", lambda db, suite, **context: bad)
    with pytest.raises(QualityGateFailed, match="1 of 1 expectation"):
        run_suite("stock_balance")


# -- each suite fails on the bad data it exists for ----------------------------------------------


def test_the_balance_suite_fails_on_books_the_constraints_would_refuse(
    world, own_admin_db, own_database_url, monkeypatch
):
    """The table's constraints refuse such rows, so the suite runs here against a copy of the
    table without them (a schema of its own, first on the search path, made by the superuser:
    no cangflow role may)."""
    import warehouse

    with own_admin_db.session() as s:
        s.execute(text("CREATE SCHEMA bad_books"))
        s.execute(
            text("CREATE TABLE bad_books.stock_balance AS SELECT * FROM public.stock_balance")
        )
        s.execute(
            text(
                """INSERT INTO bad_books.stock_balance SELECT * FROM public.stock_balance LIMIT 1"""
            )
        )  # a key twice
        s.execute(
            text(
                "UPDATE bad_books.stock_balance SET on_hand = -2, reserved = 1 WHERE id = (SELECT min(id) FROM bad_books.stock_balance)"
            )
        )
    bad = warehouse.connect(own_database_url + "?options=-csearch_path%3Dbad_books", role=None)
    try:
        result = quality.validate(bad, "stock_balance")
        as_sql, by_gx = _both_engines(bad, "stock_balance", monkeypatch)
        sound = _both_engines(own_admin_db, "stock_balance", monkeypatch)
    finally:
        bad.dispose()
        with own_admin_db.session() as s:
            s.execute(text("DROP SCHEMA bad_books CASCADE"))
    failed = {
        (row["expectation"], str(row["arguments"].get("column", row["arguments"].get("column_A"))))
        for row in result.failures
    }
    assert not result.success
    assert ("expect_column_values_to_be_between", "on_hand") in failed
    assert ("expect_column_pair_values_a_to_be_greater_than_b", "on_hand") in failed
    assert ("expect_compound_columns_to_be_unique", "None") in failed
    assert as_sql == by_gx  # the suite runs as SQL; Great Expectations answers the same
    assert sound[0] == sound[1] and sound[0][0]  # and on the sound books: both pass


def _staged(db, name: str, rows: list[tuple[str, str]]) -> str:
    """A staging table as the reconciliation loads it (by the app role, in its schema), holding
    (quantity, as_of) rows."""
    table = f'"{STAGING_SCHEMA}"."{name}"'
    with db.session() as s:
        s.execute(
            text(
                f"CREATE UNLOGGED TABLE {table} (seq bigint GENERATED ALWAYS AS IDENTITY, warehouse text, "
                "sku text, lot text, quantity text, as_of text)"
            )
        )
        for quantity, as_of in rows:
            s.execute(
                text(
                    f"INSERT INTO {table} (warehouse, sku, quantity, as_of) VALUES ('W', 'S', :q, :a)"
                ),
                {"q": quantity, "a": as_of},
            )
    return name


BOUNDS = {
    "previous_run": 7,
    "previous_rows": 10,
    "min_rows": 5,
    "max_zero_pct": 20.0,
    "mean_low": 25.0,
    "mean_high": 100.0,
}
AS_OF = "2026-12-01T00:00:00Z"
FEEDS = {
    # name: (quantities, the failing expectation's words; None: the control passes). A feed of
    # two as_of values never gets here: the row checks refuse it (test_reconcile's "as_of mixed").
    "usual": (["50"] * 9 + ["0"], None),
    "cut short": (["50"] * 4, "fewer than 5 rows"),
    "zeros": (["0"] * 5 + ["90"] * 5, "of the quantities are zero"),
    "jumped": (["500"] * 10, "the mean quantity left"),
}


def _measured_run(db, quantities: list[str] | None) -> int:
    """A run whose feed (these quantities) was staged and measured as the load step does; with
    None, a run whose load never got as far as measuring."""
    from warehouse.reconcile import profile

    with db.session() as s:
        run_id = s.execute(
            text(
                "INSERT INTO reconciliation_run (run_key, feed_name, feed_sha256, truth, settings, status) "
                "VALUES (md5(random()::text), 'shape.csv', repeat('0', 64), 'wms', '{}', 'loading') RETURNING id"
            )
        ).scalar_one()
    if quantities is None:
        return run_id
    staging = _staged(db, f"erp_feed_{run_id}_0shape00", [(q, AS_OF) for q in quantities])
    try:
        with db.session() as s:
            profile.record(s, run_id, profile.measure(s, staging))
    finally:
        with db.session() as s:
            s.execute(text(f'DROP TABLE "{STAGING_SCHEMA}"."{staging}"'))
    return run_id


@pytest.mark.parametrize("kind", list(FEEDS))
def test_the_feed_suite_fails_on_each_broken_shape_and_passes_the_usual_one(kind, world, tasks_db):
    quantities, why = FEEDS[kind]
    from tasks.database import database

    run_id = _measured_run(tasks_db, quantities)
    # As the flow runs it: the reader reads the run's measured shape.
    result = quality.validate(database("reader"), "erp_feed", run_id=run_id, **BOUNDS)
    if why is None:
        assert result.success and len(result.rows) == 4, str(result)
    else:
        assert not result.success and [why in row["why"] for row in result.failures] == [True], str(
            result
        )


def test_the_feed_suite_refuses_a_run_whose_shape_was_never_measured(tasks_db):
    """No profile must not read as a feed with nothing wrong (every bound holds on no rows)."""
    from tasks.database import database

    run_id = _measured_run(tasks_db, None)
    for bounds in (BOUNDS, {}):  # with a previous feed to go by, and without
        result = quality.validate(database("reader"), "erp_feed", run_id=run_id, **bounds)
        assert not result.success
        assert "has no measured profile" in result.failures[0]["why"], str(result)


def test_a_suite_that_cannot_run_is_an_error_not_failed_expectations(tasks_db, monkeypatch):
    """A missing table or a refused privilege says nothing about the data: an error, so that a
    good feed is never rejected and quarantined for it."""
    import expectations.erp_feed
    from tasks.database import database

    monkeypatch.setattr(
        expectations.erp_feed,
        "QUERY",
        f'SELECT 1 AS feed_rows FROM "{STAGING_SCHEMA}"."erp_feed_999999_0badf00d" WHERE {{run_id:d}} > 0',
    )
    with pytest.raises(quality.SuiteCouldNotRun, match=r"could not run .*erp_feed_999999_0badf00d"):
        quality.validate(database("reader"), "erp_feed", run_id=1, **BOUNDS)


def _run_with_lines(db, world, truth: str, statuses: list[str]) -> int:
    skus = [world.add_sku() for _ in statuses]  # one line per SKU, as the order has them
    with db.session() as s:
        run = s.execute(
            text("""INSERT INTO reconciliation_run (run_key, feed_name, feed_sha256, truth, settings, status)
            VALUES (md5(random()::text) || md5(random()::text), 'suite.csv', repeat('0', 64), :truth, '{}', 'compared')
            RETURNING id"""),
            {"truth": truth},
        ).scalar()
        order = s.execute(
            text("""INSERT INTO adjustment_order (run_id, warehouse_id, truth)
            SELECT :run, id, :truth FROM warehouse WHERE code = :w RETURNING id"""),
            {"run": run, "truth": truth, "w": world.warehouse},
        ).scalar()
        for sku, status in zip(skus, statuses, strict=True):
            s.execute(
                text("""INSERT INTO adjustment_order_line (order_id, warehouse_id, sku_id, wms_qty, erp_qty, delta, status, reason)
                SELECT :order, o.warehouse_id, (SELECT id FROM sku WHERE code = :sku), 5, 3, -2, :status, 'test'
                FROM adjustment_order o WHERE o.id = :order"""),
                {"order": order, "sku": sku, "status": status},
            )
    return run


@pytest.mark.parametrize(
    "truth, braked, max_lines, statuses, why",
    [
        ("erp", True, 10, ["held", "held"], None),  # the control: a braked run whose lines wait
        ("erp", True, 10, ["held", "applied"], "no line may be applied or sent"),
        ("wms", True, 10, ["held", "for_erp"], "no line may be applied or sent"),
        ("erp", False, 10, ["applied", "held"], "yet lines are held"),
        ("wms", False, 1, ["for_erp", "for_erp"], "more than 1 lines, over the brake's share"),
        ("wms", False, 2, ["for_erp", "for_erp"], None),  # the control: within the limits
    ],
)
def test_the_adjustments_suite_checks_the_run_against_its_brake(
    truth, braked, max_lines, statuses, why, world, tasks_db
):
    run = _run_with_lines(tasks_db, world, truth, statuses)
    result = quality.validate(
        tasks_db, "adjustment_orders", run_id=run, truth=truth, braked=braked, max_lines=max_lines
    )
    if why is None:
        assert result.success, str(result)
    else:
        assert not result.success and [why in row["why"] for row in result.failures] == [True], str(
            result
        )


def _both_engines(db, suite: str, monkeypatch, **context) -> tuple[list, list]:
    """The suite run as SQL (its AS_SQL) and by Great Expectations, on the same rows."""
    import importlib

    module = importlib.import_module(f"expectations.{suite}")
    assert module.AS_SQL
    as_sql = quality.validate(db, suite, **context)
    with monkeypatch.context() as patched:
        patched.setattr(module, "AS_SQL", False)
        by_gx = quality.validate(db, suite, **context)

    def essentials(result):  # GX orders its results its own way
        return result.success, sorted(
            (row["expectation"], row["why"], row["success"], str(row["unexpected"]))
            for row in result.rows
        )

    return essentials(as_sql), essentials(by_gx)


@pytest.mark.parametrize("kind", [*FEEDS, "never measured"])
def test_the_feed_suite_as_sql_answers_as_great_expectations_does(kind, tasks_db, monkeypatch):
    from tasks.database import database

    run_id = _measured_run(tasks_db, FEEDS[kind][0] if kind in FEEDS else None)
    as_sql, by_gx = _both_engines(
        database("reader"), "erp_feed", monkeypatch, run_id=run_id, **BOUNDS
    )
    assert as_sql == by_gx


@pytest.mark.parametrize(
    "truth, braked, max_lines, statuses",
    [
        ("erp", True, 10, ["held", "applied"]),
        ("wms", False, 1, ["for_erp", "for_erp", "held"]),
        ("wms", False, 5, ["for_erp"]),
    ],
)
def test_the_adjustments_suite_as_sql_answers_as_great_expectations_does(
    truth, braked, max_lines, statuses, world, tasks_db, monkeypatch
):
    run = _run_with_lines(tasks_db, world, truth, statuses)
    with tasks_db.session() as s:  # one line whose delta does not lead from the WMS to the ERP
        s.execute(
            text(
                "UPDATE adjustment_order_line SET erp_qty = 4 WHERE id = (SELECT min(l.id) FROM "
                "adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id WHERE o.run_id = :run)"
            ),
            {"run": run},
        )
    as_sql, by_gx = _both_engines(
        tasks_db,
        "adjustment_orders",
        monkeypatch,
        run_id=run,
        truth=truth,
        braked=braked,
        max_lines=max_lines,
    )
    assert as_sql == by_gx
    assert not as_sql[0]  # the pair check fails on both
